"""unawaited-cancel: ``task.cancel()`` only asks. Shut down without awaiting the task and its cleanup never
runs: the loop closes with the task still pending ("Task was destroyed but it is pending!").

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


def _in_own_loop(shutdown: Any) -> dict[str, Any]:
    """A small program's life: ``run_until_complete(main())`` then ``close()`` — no asyncio.run() to tidy up."""
    log: list[str] = []
    errors: list[str] = []
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(lambda _loop, context: errors.append(str(context.get("message"))))
    try:
        loop.run_until_complete(shutdown(log))
    finally:
        loop.close()
    gc.collect()  # the pending task is destroyed here, and says so
    trap = "cleanup ran" not in log
    return {
        "trap": trap,
        "summary": "cleanup never ran; " + (errors[0] if errors else "no warning") if trap else "cleanup ran",
        "cleanup_ran": not trap,
        "loop_errors": errors,
    }


async def measure(shutdown: Any) -> dict[str, Any]:
    """Each variant's shutdown in a separate, naive event loop of its own (in a thread)."""
    return await asyncio.to_thread(_in_own_loop, shutdown)


PITFALL = Pitfall("unawaited-cancel", broken_shutdown, fixed_shutdown, measure)
