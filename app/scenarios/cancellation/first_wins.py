"""first-wins: connect to several addresses at once and keep the first that succeeds (happy eyeballs). With bare
tasks and ``asyncio.wait(FIRST_COMPLETED)``, the first to finish may be a failure, which is then taken as the
answer, and the losers are cancelled but never awaited: they are still running (sockets open) after the
call has returned.

Fix: the attempts in a ``TaskGroup``: a failed attempt ends only itself, the winner cancels the others, and
the group waits for every one of them before the call returns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from ...scenario import Pitfall

Attempt = Callable[[], Coroutine[Any, Any, str]]


async def broken_connect(attempts: list[Attempt]) -> str:
    """The first attempt to finish is the answer, even a failure; the others are asked to stop, not awaited."""
    tries = [asyncio.create_task(attempt()) for attempt in attempts]
    done, pending = await asyncio.wait(tries, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    return done.pop().result()


async def fixed_connect(attempts: list[Attempt]) -> str:
    """The first attempt to succeed wins and cancels the others; the group waits for all of them."""
    won: list[str] = []

    async def attempt(connect: Attempt) -> None:
        try:
            connection = await connect()
        except OSError:
            return  # this address failed; the others go on
        won.append(connection)
        for task in tries:
            if task is not asyncio.current_task():
                task.cancel()

    async with asyncio.TaskGroup() as group:
        tries = [group.create_task(attempt(connect)) for connect in attempts]
    if not won:
        raise OSError("every address failed")
    return won[0]


async def measure(connect: Callable[[list[Attempt]], Awaitable[str]]) -> dict[str, Any]:
    """Three addresses: one refuses at once, one answers after 50 ms, one would after 300 ms. Every
    connection opened is closed in a clean-up that needs the loop (10 ms)."""
    running: set[str] = set()

    def address(name: str, after: float, fails: bool = False) -> Attempt:
        async def attempt() -> str:
            running.add(name)
            try:
                await asyncio.sleep(after)
                if fails:
                    raise ConnectionRefusedError(f"{name}: connection refused")
                return name
            finally:
                await asyncio.sleep(0.01)  # closing the socket
                running.discard(name)

        return attempt

    attempts = [address("::1", 0.0, fails=True), address("127.0.0.1", 0.05), address("10.0.0.1", 0.3)]
    try:
        result, error = await connect(attempts), None
    except OSError as exc:
        result, error = None, str(exc)
    left = sorted(running)
    await asyncio.sleep(0.35)  # bounded: let whatever was left behind end before the next run
    trap = error is not None or bool(left)
    return {
        "trap": trap,
        "summary": (
            f"connected to {result}, nothing left running"
            if not trap
            else f"{'failed: ' + error if error else 'connected to ' + str(result)}; "
            f"{len(left)} attempt(s) still running after the call returned"
        ),
        "connected_to": result,
        "error": error,
        "still_running_after_return": left,
    }


# Cancelled while it waits (the map does it), broken also leaves the refused attempt's error unretrieved.
PITFALL = Pitfall("first-wins", broken_connect, fixed_connect, measure, cancel_trap=True)
