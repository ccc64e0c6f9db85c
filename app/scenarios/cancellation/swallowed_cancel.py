"""swallowed-cancel: a bare ``except:`` (or ``except BaseException``, ``suppress(CancelledError)``) around an
await eats the cancellation: the task never stops, and a timeout around it cannot fire.

Fix: let ``CancelledError`` through — catch ``Exception`` (it is a ``BaseException`` since 3.8), or re-raise.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ...scenario import Pitfall

TIMEOUT = 0.1
WORK_STEPS = 10  # each 0.05 s: the work would take 0.5 s uncancelled


async def broken_work(steps: list[int]) -> None:
    """The work runs on through its cancellation: the 0.1 s timeout neither stops it nor raises."""
    for i in range(WORK_STEPS):
        try:
            await asyncio.sleep(0.05)
        except BaseException:
            pass
        steps.append(i)


async def fixed_work(steps: list[int]) -> None:
    """The cancellation propagates: the timeout stops the work at 0.1 s and raises TimeoutError."""
    for i in range(WORK_STEPS):
        try:
            await asyncio.sleep(0.05)
        except Exception:  # an error of the step; CancelledError is not an Exception
            pass
        steps.append(i)


async def measure(work: Any) -> dict[str, Any]:
    steps: list[int] = []
    started = time.monotonic()
    timed_out = False
    try:
        async with asyncio.timeout(TIMEOUT):
            await work(steps)
    except TimeoutError:
        timed_out = True
    elapsed = time.monotonic() - started
    trap = not timed_out
    return {
        "trap": trap,
        "summary": (
            f"timeout of {TIMEOUT} s never fired: the work ran all {len(steps)} steps, {elapsed:.2f} s"
            if trap
            else f"timeout fired after {elapsed:.2f} s; the work stopped after {len(steps)} of {WORK_STEPS} steps"
        ),
        "timeout_s": TIMEOUT,
        "elapsed_s": round(elapsed, 3),
        "timeout_raised": timed_out,
        "steps_done": len(steps),
    }


PITFALL = Pitfall("swallowed-cancel", broken_work, fixed_work, measure, cancel_trap=True)
