"""wait-for-race: on Python 3.8 to 3.11, ``asyncio.wait_for`` returns the result and drops a cancellation that
lands in the same loop iteration as that result. aiopg waits for every query with ``wait_for``: a handler
cancelled just as its COMMIT returns carries on as if nothing happened. Fixed in Python 3.12 (docs/MATRIX.md).

Fix: ``asyncio.timeout`` (3.11+), which never loses the cancellation; or do not depend on ``wait_for``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from ... import tasks
from ...scenario import Pitfall

TRIES = 1000


async def broken_wait(fut: asyncio.Future[int]) -> int:
    """wait_for: the result and the cancel arrive together; the cancel is lost."""
    return await asyncio.wait_for(fut, timeout=10)


async def fixed_wait(fut: asyncio.Future[int]) -> int:
    """asyncio.timeout: the same race, and the task is cancelled every time."""
    async with asyncio.timeout(10):
        return await fut


async def measure(wait: Callable[[asyncio.Future[int]], Coroutine[Any, Any, int]]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    ours = tasks.CancelWatch()
    swallowed = 0
    for _ in range(TRIES):
        fut: asyncio.Future[int] = loop.create_future()
        task = asyncio.create_task(wait(fut))
        try:
            await asyncio.sleep(0)  # the task is now waiting on fut
            fut.set_result(42)  # the result arrives...
            task.cancel()  # ...and the cancellation, in the same iteration
            try:
                await task
                swallowed += 1  # it returned normally: the cancel was lost
            except asyncio.CancelledError:
                if ours.requested:  # not the experiment's cancel: ours (a hang-up), so pass it on
                    raise
        finally:
            await tasks.stop(task)  # a hang-up mid-race leaves no waiter behind
    trap = swallowed > 0
    version = ".".join(map(str, sys.version_info[:3]))
    return {
        "trap": trap,
        "summary": (
            f"{swallowed} of {TRIES} cancellations lost on Python {version}"
            if trap
            else f"0 of {TRIES} cancellations lost on Python {version}"
            + ("" if sys.version_info < (3, 12) else " (the wait_for race is gone since 3.12)")
        ),
        "tries": TRIES,
        "cancellations_lost": swallowed,
    }


PITFALL = Pitfall("wait-for-race", broken_wait, fixed_wait, measure, cancel_trap=True)
