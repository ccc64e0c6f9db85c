"""self-cancel: ``asyncio.current_task().cancel()`` does not stop anything now. It asks for a CancelledError at
the *next* await; the code up to there runs — and a ``try``/``except`` there can still swallow it.

Fix: to stop now, ``return`` (or raise); use ``cancel()`` on *other* tasks, and await them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web


async def broken_job(writes: list[str]) -> None:
    asyncio.current_task().cancel()  # type: ignore[union-attr]  # "stop this task here"
    writes.append("written after cancel()")  # runs: cancel() only set a flag
    await asyncio.sleep(0)  # CancelledError lands here
    writes.append("never")


async def fixed_job(writes: list[str]) -> None:
    return  # stop here, really
    writes.append("unreachable")  # pragma: no cover


async def broken(request: web.Request) -> dict[str, Any]:
    """The write after cancel() happens: cancelling yourself is a request, not a stop."""
    return await _run(broken_job)


async def fixed(request: web.Request) -> dict[str, Any]:
    """Returning stops the job at once: nothing is written."""
    return await _run(fixed_job)


async def _run(job: Any) -> dict[str, Any]:
    writes: list[str] = []
    task = asyncio.create_task(job(writes))
    try:
        await task
        outcome = "returned"
    except asyncio.CancelledError:
        outcome = "cancelled at its next await"
    trap = bool(writes)
    return {
        "trap": trap,
        "summary": f"{outcome}; writes after the stop: {writes or 'none'}",
        "writes_after_stop": writes,
        "outcome": outcome,
    }
