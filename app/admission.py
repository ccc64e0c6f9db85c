"""Admission: a bound on work in flight, checked and taken in one synchronous step.

``if queue not full: await insert(); await spawn()`` lets every concurrent request through the check, and
``aiojobs.aiohttp.shield`` is not a job, so the scheduler's limits never bound it. A ``Gate`` is taken before
any work starts, without an await between the check and the count, and is released by the work itself when
it ends — not by the handler, which a hang-up ends early while shielded work goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from .errors import ServiceUnavailable

log = logging.getLogger("app.admission")
T = TypeVar("T")

RETRY_AFTER = 1  # seconds, in the 503's Retry-After header


class Gate:
    """At most ``limit`` units of ``what`` in flight; beyond it, ``enter`` raises a 503 at once."""

    def __init__(self, what: str, limit: int) -> None:
        self.what = what
        self.limit = limit
        self.in_flight = 0
        self.refused = 0

    def __repr__(self) -> str:
        return f"<Gate {self.what} {self.in_flight}/{self.limit} refused={self.refused}>"

    def enter(self) -> Pass:
        if self.in_flight >= self.limit:
            self.refused += 1
            raise ServiceUnavailable(
                f"too many {self.what} in progress (limit {self.limit}), try again later", retry_after=RETRY_AFTER
            )
        self.in_flight += 1
        return Pass(self)

    def try_enter(self) -> Pass | None:
        """For background work that can wait for its next turn instead of a 503."""
        if self.in_flight >= self.limit:
            return None
        self.in_flight += 1
        return Pass(self)


class Pass:
    """One admitted unit; ``leave`` (idempotent) gives its place back."""

    __slots__ = ("_gate",)

    def __init__(self, gate: Gate) -> None:
        self._gate: Gate | None = gate

    def leave(self) -> None:
        if self._gate is not None:
            self._gate.in_flight -= 1
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
