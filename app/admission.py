"""Admission: a bound on work in flight, checked and taken in one synchronous step.

``if queue not full: await insert(); await spawn()`` lets every concurrent request through the check, and
``aiojobs.aiohttp.shield`` is not a job, so the scheduler's limits never bound it. A ``Gate`` is taken before
any work starts, without an await between the check and the count, and is released by the work itself when
it ends — not by the handler, which a hang-up ends early while shielded work goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from .errors import ServiceUnavailable

log = logging.getLogger("app.admission")
T = TypeVar("T")

RETRY_AFTER = 1  # seconds, in the 503's Retry-After header


class Gate:
    """At most ``limit`` units of ``what`` in flight, and at most ``queue`` more waiting for a place (first come,
    first served; a waiter whose request is cancelled leaves the queue). Beyond both, ``enter`` raises a 503 at
    once: never after queueing past the bound. Only work in flight counts against ``limit``: a waiter has
    started nothing, so its hang-up leaves nothing behind. Waiting costs nothing per turn of the loop, while a
    refusal costs a whole request: clients that ask again at once (ignoring ``Retry-After``) kept the loop so
    busy refusing that the admitted work crawled (bench/RESULTS.md, 2c)."""

    def __init__(self, what: str, limit: int, *, queue: int = 0) -> None:
        self.what = what
        self.limit = limit
        self.queue = queue
        self.in_flight = 0
        self.refused = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    def __repr__(self) -> str:
        return f"<Gate {self.what} {self.in_flight}/{self.limit} queued={self.queued} refused={self.refused}>"

    @property
    def queued(self) -> int:
        return len(self._waiters)

    async def enter(self) -> Pass:
        """A place: at once while one is free (checked and taken in one step), else after waiting in the queue."""
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return Pass(self)
        if len(self._waiters) >= self.queue:
            self.refused += 1
            waiting = f", {self.queue} waiting" if self.queue else ""
            raise ServiceUnavailable(
                f"too many {self.what} in progress (limit {self.limit}{waiting}), try again later",
                retry_after=RETRY_AFTER,
            )
        place = asyncio.get_running_loop().create_future()
        self._waiters.append(place)
        try:
            await place  # the place of a unit that left, handed over as it is: in_flight stays counted
        except asyncio.CancelledError:
            if place.cancelled():
                if place in self._waiters:  # (a unit that left meanwhile skipped it already)
                    self._waiters.remove(place)
            else:  # handed over just as the cancel came: pass it on, or it would be lost for good
                self._leave()
            raise
        return Pass(self)

    def try_enter(self) -> Pass | None:
        """For background work that can wait for its next turn instead of a 503 (never ahead of a waiter)."""
        if self.in_flight >= self.limit or self._waiters:
            return None
        self.in_flight += 1
        return Pass(self)

    def _leave(self) -> None:
        """A unit left: its place goes to the first waiter, else back to the gate."""
        while self._waiters:
            place = self._waiters.popleft()
            if not place.done():
                place.set_result(None)
                return
        self.in_flight -= 1


class Pass:
    """One admitted unit; ``leave`` (idempotent) gives its place back."""

    __slots__ = ("_gate",)

    def __init__(self, gate: Gate) -> None:
        self._gate: Gate | None = gate

    def leave(self) -> None:
        if self._gate is not None:
            self._gate._leave()
            self._gate = None


async def protected(work: Awaitable[T], passed: Pass, *, what: str, failed: Callable[[], None]) -> T:
    """Run ``work`` (shielded by the caller) holding ``passed`` until it ends. Its failure is logged and
    counted (``failed``) here: once the request is cancelled, ``aiojobs.aiohttp.shield`` retrieves and drops
    the exception, so nobody else would ever see it."""
    try:
        return await work
    except Exception:
        failed()
        log.exception("protected work failed: %s", what)
        raise
    finally:
        passed.leave()


@dataclass
class Gates:
    """A variant's admission bounds (used by its fixed handlers)."""

    orders: Gate
    transfers: Gate
    exports: Gate
    reports: Gate
