"""cancel-then-wait: after ``task.cancel()``, ``await task`` waits without a bound. A task that loses the cancel
(a library hit by Python 3.11's ``wait_for`` race, a retry loop that catches ``CancelledError``) never ends,
and neither does the caller: the shutdown that hangs until someone sends SIGKILL.

Fix: wait with a bound and cancel again while it still runs (``asyncio.wait`` with a timeout neither cancels
the task nor eats the caller's own cancel); the app's ``tasks.stop`` does this for every task it owns.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ... import tasks
from ...scenario import Pitfall

RECANCEL_EVERY = 0.05
HANG_AFTER = 0.5  # the measurement's own bound: a wait longer than this is a hang


async def _loses_one_cancel(log: list[str]) -> None:
    """Long-running work that loses one cancel, as a library can; the next cancel ends it."""
    lost = False
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            if lost:
                raise
            lost = True
            log.append("lost a cancel")


async def broken_stop(task: asyncio.Task[None]) -> None:
    """Cancel, then wait for as long as it takes: the task lost the cancel, so it takes forever."""
    task.cancel()
    await task


async def fixed_stop(task: asyncio.Task[None]) -> None:
    """Cancel, then wait a bounded time and cancel again while it still runs; a cancel of our own on the way
    asks the task once more before it propagates, so nothing is left running behind us."""
    task.cancel()
    while not task.done():
        try:
            await asyncio.wait([task], timeout=RECANCEL_EVERY)
        finally:
            if not task.done():
                task.cancel()


async def measure(stop: Any) -> dict[str, Any]:
    log: list[str] = []
    worker = asyncio.create_task(_loses_one_cancel(log))
    started = time.monotonic()
    try:
        await asyncio.sleep(0)  # the worker is running
        try:
            async with asyncio.timeout(HANG_AFTER):
                await stop(worker)
            hung = False
        except TimeoutError:
            hung = True  # our bound cancelled the wait: that second cancel is what ended the worker
        elapsed = time.monotonic() - started
    finally:
        await tasks.stop(worker)  # the measurement's own clean-up, whatever the variant did
    return {
        "trap": hung,
        "summary": (
            f"still waiting after {elapsed:.2f} s: the task lost the cancel and the wait had no bound"
            if hung
            else f"stopped in {elapsed:.2f} s: the task lost the first cancel, the second ended it"
        ),
        "hung": hung,
        "elapsed_s": round(elapsed, 3),
        "cancels_lost": len(log),
    }


PITFALL = Pitfall("cancel-then-wait", broken_stop, fixed_stop, measure)
