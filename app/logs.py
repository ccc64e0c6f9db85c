"""Logging that a flood cannot drown: at most one line per cause per interval, with a count of the rest."""

from __future__ import annotations

import logging
import time


class Throttled:
    """``warning(cause, msg, *args)`` logs at most once per ``every`` seconds for each ``cause``; the next line
    that gets through says how many were held back meanwhile."""

    def __init__(self, logger: logging.Logger, *, every: float = 1.0) -> None:
        self.logger = logger
        self.every = every
        self._last: dict[str, tuple[float, int]] = {}  # cause -> (logged at, held back since)

    def warning(self, cause: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        logged_at, held = self._last.get(cause, (float("-inf"), 0))
        if now - logged_at < self.every:
            self._last[cause] = (logged_at, held + 1)
            return
        self._last[cause] = (now, 0)
        if held:
            msg, args = f"{msg} (and {held} more like it in the last %.0f s)", (*args, now - logged_at)
        self.logger.warning(msg, *args)
