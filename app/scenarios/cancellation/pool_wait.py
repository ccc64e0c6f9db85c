"""pool-wait: a request cancelled (its client hung up) around ``async with pool.acquire()`` can leave the next
request waiting beside a free connection until its timeout (aiopg's default: 60 s). Cancelled just after the
pool woke it, it takes the wake-up with it (aiopg waits on an ``asyncio.Condition``, which on Python 3.11 and
3.12 passes a cancelled waiter's wake-up to nobody); cancelled in its query, aiopg closes the connection, and
a closed connection's release wakes nobody, although the pool may now open a new one.

Fix: wait for the connection in a task the caller's cancel does not reach, give back the connection that
arrives after the caller left, and wake the next waiter when the connection comes back closed
(``app.db.acquired``). Python 3.13 fixed the Condition (gh-112202); aiopg 1.4's release is as it is.
redis-py's ``BlockingConnectionPool`` waits on such a Condition too (8.1, read in its source); the app's Redis
pools do not wait (full: an error at once), so only aiopg's wait is shown here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import aiopg

from ...db import acquired
from ...scenario import Pitfall, database_url

WAIT = 0.5  # the pool's acquire timeout for the run (aiopg's default is 60 s)
Use = Callable[[aiopg.Pool], Coroutine[Any, Any, None]]


async def broken_use(pool: aiopg.Pool) -> None:
    """Cancelled just after the pool woke it, the wake-up is lost; cancelled in the query, the connection is
    closed and its release wakes nobody."""
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("SELECT 1")


async def fixed_use(pool: aiopg.Pool) -> None:
    """Waits in a task of its own: cancelled, it leaves, and the connection it then gets goes straight back; a
    connection closed by the cancel wakes the next waiter."""
    async with acquired(pool) as conn, conn.cursor() as cur:
        await cur.execute("SELECT 1")


async def _trial(use: Use, iterations: int) -> float | None:
    """A pool of one real connection, held; requests A and B wait for it. It is released, and A is cancelled
    (its client hung up) ``iterations`` loop iterations later. How long B then waits, or None if it timed out
    although the pool had a connection for it (free, or room to open one)."""
    pool = await aiopg.create_pool(database_url.get(), minsize=1, maxsize=1, timeout=WAIT)
    try:
        held = await pool.acquire()
        a, b = asyncio.create_task(use(pool)), asyncio.create_task(use(pool))
        try:
            for _ in range(5):  # A, then B, enter the pool's wait (no I/O on the way: the pool is full)
                await asyncio.sleep(0)
            pool.release(held)
            for _ in range(iterations):
                await asyncio.sleep(0)
            a.cancel()
            started = time.monotonic()
            await asyncio.gather(a, return_exceptions=True)
            try:
                await b
            except TimeoutError:
                return None
            return time.monotonic() - started
        finally:
            for task in (a, b):
                task.cancel()
            await asyncio.gather(a, b, return_exceptions=True)
    finally:
        pool.terminate()
        await pool.wait_closed()


async def measure(use: Use) -> dict[str, Any]:
    """Six trials at once, A cancelled 0 to 5 loop iterations after the release: in its wait, just after its
    wake-up, or in its query."""
    async with asyncio.TaskGroup() as trials:
        running = [trials.create_task(_trial(use, iterations)) for iterations in range(6)]
    waits = [trial.result() for trial in running]
    starved = sum(w is None for w in waits)
    return {
        "trap": starved > 0,
        "summary": (
            f"after {starved} of {len(waits)} hang-ups the next request waited out its {WAIT} s timeout although"
            " the pool had a connection for it"
            if starved
            else f"after each of {len(waits)} hang-ups the next request got its connection at once"
        ),
        "next_request_wait_s": [None if w is None else round(w, 3) for w in waits],
    }


PITFALL = Pitfall("pool-wait", broken_use, fixed_use, measure)
