"""shielded-error: ``await asyncio.shield(write())`` keeps the write going when the caller is cancelled, but
from then on nobody awaits it: when it fails, the error reaches no one (at best a "Task exception was never
retrieved" line when the task is garbage-collected; aiojobs.aiohttp.shield drops it the same way).

Fix: the shielded work records its own failure (log, counter, a row): a wrapper inside the shield catches
it, whether or not anyone is still waiting. The app's ``protected`` does this for every shielded write.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Coroutine
from typing import Any

from ...scenario import Pitfall

Save = Callable[[list[str]], Coroutine[Any, Any, None]]


async def _write() -> None:
    await asyncio.sleep(0.05)
    raise ConnectionError("the database went away mid-write")


async def broken_save(failures: list[str]) -> None:
    """Shielded, so the write outlives the cancelled caller; its error then has nowhere to go."""
    await asyncio.shield(_write())


async def fixed_save(failures: list[str]) -> None:
    """Shielded, and the failure recorded inside the shield, where it happens; a caller still waiting gets
    it raised too, and one gone leaves nothing for asyncio to complain about."""

    async def recorded() -> None:
        try:
            await _write()
        except Exception as exc:
            failures.append(repr(exc))  # and log it, count it, mark the row failed
            raise

    write = asyncio.ensure_future(recorded())
    write.add_done_callback(lambda task: task.cancelled() or task.exception())  # retrieved: it is recorded
    await asyncio.shield(write)


def _hang_up_during(save: Save) -> dict[str, Any]:
    """The caller is cancelled 10 ms in (the client hung up); the write fails 40 ms later. In an event loop of
    its own (in a thread), so what asyncio reports about lost errors can be read."""
    failures: list[str] = []
    reported: list[str] = []

    async def main() -> None:
        caller = asyncio.create_task(save(failures))
        await asyncio.sleep(0.01)
        caller.cancel()
        await asyncio.gather(caller, return_exceptions=True)
        await asyncio.sleep(0.1)  # the shielded write ends (and fails) meanwhile

    loop = asyncio.new_event_loop()
    loop.set_exception_handler(lambda _loop, context: reported.append(str(context.get("message"))))
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    gc.collect()  # the failed task is destroyed: asyncio's last word on it
    return {"failures": failures, "reported": reported}


async def measure(save: Save) -> dict[str, Any]:
    seen = await asyncio.to_thread(_hang_up_during, save)
    trap = not seen["failures"]
    return {
        "trap": trap,
        "summary": (
            "the write failed after the hang-up and nothing recorded it"
            + (f"; asyncio said only: {seen['reported'][0]}" if seen["reported"] else "")
            if trap
            else f"the write failed after the hang-up and was recorded: {seen['failures'][0]}"
        ),
        "recorded": seen["failures"],
        "asyncio_reported": seen["reported"],
    }


PITFALL = Pitfall("shielded-error", broken_save, fixed_save, measure)
