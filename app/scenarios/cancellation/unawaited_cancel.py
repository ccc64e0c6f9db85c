"""unawaited-cancel: ``task.cancel()`` only asks. Shut down without awaiting the task and its cleanup never
runs: a loop closed by hand drops the task still pending ("Task was destroyed but it is pending!"), and under
``asyncio.run`` (what Ctrl-C goes through) run's own second cancel interrupts the cleanup's first await.

Fix: cancel, then await (``gather(..., return_exceptions=True)``), or let a ``TaskGroup`` do both.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from ...scenario import Pitfall


async def _worker(log: list[str]) -> None:
    try:
        await asyncio.sleep(3600)
    finally:
        await asyncio.sleep(0.01)  # cleanup that needs the loop: flush, close a connection...
        log.append("cleanup ran")


async def broken_shutdown(log: list[str]) -> None:
    """The worker is cancelled but not awaited; the (separate, naive) loop shuts down under it."""
    task = asyncio.create_task(_worker(log))
    await asyncio.sleep(0.01)
    task.cancel()  # ...and return: nobody waits for the cleanup


async def fixed_shutdown(log: list[str]) -> None:
    """Cancelled, then awaited: its cleanup runs before the loop shuts down."""
    task = asyncio.create_task(_worker(log))
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)  # the cleanup runs before we go on


def _in_own_loop(shutdown: Any) -> tuple[bool, list[str]]:
    """A small program's life: ``run_until_complete(main())`` then ``close()``. Did the cleanup run, and what
    did asyncio report?"""
    log: list[str] = []
    errors: list[str] = []
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(lambda _loop, context: errors.append(str(context.get("message"))))
    try:
        loop.run_until_complete(shutdown(log))
    finally:
        loop.close()
    gc.collect()  # the pending task is destroyed here, and says so
    return "cleanup ran" in log, errors


def _under_asyncio_run(shutdown: Any) -> bool:
    """The same ``main()`` under ``asyncio.run``, which cancels the tasks left and waits for them: did the
    cleanup run?"""
    log: list[str] = []
    asyncio.run(shutdown(log))
    return "cleanup ran" in log


async def measure(shutdown: Any) -> dict[str, Any]:
    """Each variant's shutdown in event loops of its own (in a thread): closed by hand, and by asyncio.run."""
    ran, errors = await asyncio.to_thread(_in_own_loop, shutdown)
    ran_under_run = await asyncio.to_thread(_under_asyncio_run, shutdown)
    trap = not (ran and ran_under_run)
    lost = [how for how, ok in (("a loop closed by hand", ran), ("asyncio.run", ran_under_run)) if not ok]
    return {
        "trap": trap,
        "summary": (
            f"cleanup never ran under {' nor under '.join(lost)}" + (f"; {errors[0]}" if errors else "")
            if trap
            else "cleanup ran, under a loop closed by hand and under asyncio.run"
        ),
        "cleanup_ran": ran,
        "cleanup_ran_under_asyncio_run": ran_under_run,
        "loop_errors": errors,
    }


PITFALL = Pitfall("unawaited-cancel", broken_shutdown, fixed_shutdown, measure)
