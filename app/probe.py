"""Named checkpoints a handler passes, counted, so tests and /api/state know exactly where handlers are."""

from __future__ import annotations

import asyncio
from collections import Counter


class Probe:
    """Counts checkpoints (``"broken.hold"``, ``"fixed.cancelled"``...) and lets a caller await a count.

    Tests use it to hang up at a known point of a handler instead of hoping a timer lands in the window.
    """

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._waiters: list[tuple[str, int, asyncio.Future[None]]] = []

    def __repr__(self) -> str:
        return f"<Probe {dict(self.counts)}>"

    def hit(self, name: str) -> None:
        self.counts[name] += 1
        for waiter in list(self._waiters):
            wanted, n, fut = waiter
            if wanted == name and self.counts[name] >= n:
                self._waiters.remove(waiter)
                if not fut.done():
                    fut.set_result(None)

    async def reached(self, name: str, n: int, *, timeout: float = 10.0) -> None:
        """Wait until checkpoint ``name`` has been passed ``n`` times in all."""
        if self.counts[name] >= n:
            return
        waiter = (name, n, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter[2]
        except TimeoutError:
            raise TimeoutError(f"{name} reached {self.counts[name]} of {n} in {timeout} s") from None
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
