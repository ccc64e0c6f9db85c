"""Owning a task: cancel it, then await it — with a bound, cancelling again if a cancel was lost.

Python 3.11's ``wait_for`` (which redis-py and aiopg await their I/O with) drops a cancel that lands in
the same loop iteration as the result, so one ``task.cancel(); await task`` can hang forever. And wrapping that
await in ``suppress(CancelledError)`` also swallows the *caller's* cancellation. ``stop`` does neither.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

T = TypeVar("T")

log = logging.getLogger("app.tasks")

STOP_TIMEOUT = 5.0
RECANCEL_EVERY = 0.25


async def stop(
    task: asyncio.Task[Any], *, timeout: float = STOP_TIMEOUT, recancel_every: float = RECANCEL_EVERY
) -> bool:
    """Cancel ``task`` and wait until it has ended, at most ``timeout`` seconds, cancelling it again every
    ``recancel_every`` seconds until it does. Returns whether it ended. Its exception, if any, is logged, never
    raised (stopping is cleanup). If the caller is cancelled meanwhile, that cancellation propagates, and the
    task is asked once more on the way out (it may have lost the last cancel: then nobody would ask again);
    its outcome is still logged when it ends."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while not task.done():
            remaining = deadline - loop.time()
            if remaining <= 0:
                log.error("task %r did not stop within %.1f s; left running", task.get_name(), timeout)
                task.add_done_callback(_log_outcome)
                return False
            task.cancel()
            # asyncio.wait neither cancels the task nor swallows our own cancellation.
            await asyncio.wait({task}, timeout=min(recancel_every, remaining))
    except asyncio.CancelledError:
        task.cancel()
        task.add_done_callback(_log_outcome)
        raise
    _log_outcome(task)
    return True


def _log_outcome(task: asyncio.Task[Any]) -> None:
    """Retrieve the task's exception (so asyncio never says "never retrieved") and log it."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("task %r ended with %r", task.get_name(), exc, exc_info=exc)


CleanupCtx = Callable[[web.Application], AsyncIterator[None]]


def guarded(ctx: CleanupCtx) -> CleanupCtx:
    """A ``cleanup_ctx`` whose clean-up logs its failure instead of raising it. aiohttp runs the root app's
    clean-up before its sub-apps' and stops at the first error: one failing root resource would otherwise skip
    the variants' drain and pool close. Start-up errors still propagate (the app must not start half-built)."""

    @functools.wraps(ctx)
    async def wrapper(app: web.Application) -> AsyncIterator[None]:
        gen = ctx(app)
        await anext(gen)
        yield
        try:
            await anext(gen, None)
        except Exception:
            log.exception("clean-up of %s failed; going on with the rest", ctx.__name__)

    return wrapper


async def checked(awaitable: Awaitable[T]) -> T:
    """Await ``awaitable``, and raise a cancellation it swallowed. aiopg awaits every query, and redis-py every
    command, with its own ``wait_for``, which on Python 3.11 returns the result when a cancel lands with it
    (fixed in 3.12): the call "succeeds" and the task runs on as if nobody had asked it to stop.
    ``Task.cancelling()`` still counts the request: if it grew during the await and nothing was raised, the
    cancel was swallowed. (Only its growth: 3.11's TaskGroup can leave an old count behind, which is not ours
    to act on.)"""
    cancels = CancelWatch()
    result = await awaitable
    cancels.raise_if_requested()
    return result


class CancelWatch:
    """Whether the current task has been asked to cancel since this watch was made: ``Task.cancelling()`` grew.
    Tells a cancel of ours from one that was only swallowed or aimed at another task we awaited."""

    def __init__(self) -> None:
        self.task = asyncio.current_task()
        self.before = self.task.cancelling() if self.task is not None else 0

    @property
    def requested(self) -> bool:
        return self.task is not None and self.task.cancelling() > self.before

    def raise_if_requested(self) -> None:
        if self.requested:
            raise asyncio.CancelledError
