"""slow-cleanup-timeout: ``wait_for(coro, 0.5)`` cancels the coroutine at 0.5 s and then *waits for its
cleanup*: with 1 s of cleanup the caller gets its TimeoutError after 1.5 s, not 0.5 s.

Fix: bound the cleanup too (its own timeout inside ``finally``), so the caller can count on
``timeout + cleanup bound``; and say so where the timeout is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from ...scenario import Pitfall

TIMEOUT = 0.5
CLEANUP = 1.0  # what the cleanup would take
CLEANUP_BOUND = 0.1  # what the fixed variant allows it


async def broken_work(log: list[str]) -> None:
    """The caller asked for 0.5 s and waits 1.5 s: the timeout waits for the whole cleanup."""
    try:
        await asyncio.sleep(3600)
    finally:
        await asyncio.sleep(CLEANUP)  # e.g. a graceful close of a remote session
        log.append("cleanup finished")


async def fixed_work(log: list[str]) -> None:
    """The cleanup has its own 0.1 s bound: the caller gets control back at 0.6 s, as documented."""
    try:
        await asyncio.sleep(3600)
    finally:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLEANUP_BOUND):
                await asyncio.sleep(CLEANUP)
                log.append("cleanup finished")


async def measure(work: Any) -> dict[str, Any]:
    log: list[str] = []
    started = time.monotonic()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(work(log), TIMEOUT)
    elapsed = time.monotonic() - started
    trap = elapsed >= TIMEOUT + CLEANUP  # the caller waited the whole unbounded cleanup
    return {
        "trap": trap,
        "summary": f"wait_for({TIMEOUT}) returned after {elapsed:.2f} s",
        "timeout_s": TIMEOUT,
        "elapsed_s": round(elapsed, 3),
        "cleanup_finished": "cleanup finished" in log,
        "caller_can_expect_s": TIMEOUT + CLEANUP_BOUND,
    }


PITFALL = Pitfall("slow-cleanup-timeout", broken_work, fixed_work, measure, cancel_trap=True)
