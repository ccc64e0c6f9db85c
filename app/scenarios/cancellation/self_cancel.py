"""self-cancel: ``asyncio.current_task().cancel()`` does not stop anything now. It asks for a CancelledError at
the *next* await; the code up to there runs — and a ``try``/``except`` there can still swallow it.

Fix: to stop now, ``return`` (or raise); use ``cancel()`` on *other* tasks, and await them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ... import tasks
from ...scenario import Pitfall


async def broken_job(writes: list[str], *, stop: bool) -> None:
    """The write after cancel() happens: cancelling yourself is a request, not a stop."""
    writes.append("before the stop")
    if stop:
        asyncio.current_task().cancel()  # type: ignore[union-attr]  # "stop this task here"
    writes.append("written after the stop")  # runs: cancel() only set a flag
    await asyncio.sleep(0)  # CancelledError lands here
    writes.append("later")


async def fixed_job(writes: list[str], *, stop: bool) -> None:
    """Returning stops the job at once: nothing is written."""
    writes.append("before the stop")
    if stop:
        return  # stop here, really
    writes.append("written after the stop")
    await asyncio.sleep(0)
    writes.append("later")


async def measure(job: Any) -> dict[str, Any]:
    """The job decides to stop after its first write; anything written after that is the trap."""
    writes: list[str] = []
    ours = tasks.CancelWatch()
    task = asyncio.create_task(job(writes, stop=True))
    try:
        await task
        outcome = "returned"
    except asyncio.CancelledError:
        if ours.requested:  # our own cancel (a hang-up), not the job's: pass it on
            raise
        outcome = "cancelled at its next await"
    after = writes[1:]
    return {
        "trap": bool(after),
        "summary": f"{outcome}; writes after the stop: {after or 'none'}",
        "writes_before_stop": writes[:1],
        "writes_after_stop": after,
        "outcome": outcome,
    }


PITFALL = Pitfall("self-cancel", broken_job, fixed_job, measure)
