"""Plumbing of the database layer: ``checked`` raises a cancellation that an awaited library call swallowed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Generator
from typing import Any

import aiopg
import pytest

from app.db import VariantDb, acquired, checked, fetch_one
from app.settings import Settings


async def swallowing() -> str:
    """What Python 3.11's ``wait_for`` inside aiopg does to a cancel that lands with the query's result."""
    asyncio.current_task().cancel()  # type: ignore[union-attr]  # the hang-up, landing right now...
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(0)  # ...and swallowed
    return "result"


async def test_a_swallowed_cancel_is_raised_again() -> None:
    """(The cancellation map found it for real: ``make explore TARGET=export`` showed the fixed export's first
    query returning normally after its hang-up in one run of three.)"""

    async def handler() -> str:
        await checked(swallowing())
        return "went on as if nothing happened"

    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(handler())


async def test_nothing_is_raised_without_a_cancel() -> None:
    assert await checked(asyncio.sleep(0, "ok")) == "ok"


async def test_an_older_unanswered_cancel_count_is_not_acted_on() -> None:
    """3.11's TaskGroup can leave ``cancelling()`` at 1 after a failed child: only a cancel that arrives
    during the awaited call counts."""

    async def handler() -> str:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0)  # a count left behind, before the call
        return await checked(asyncio.sleep(0, "ok"))

    assert await asyncio.create_task(handler()) == "ok"


async def test_a_timeout_still_reads_as_a_timeout() -> None:
    async def slow_then_swallowed() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(1)

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await checked(slow_then_swallowed())


class SwallowingPool:
    """A real aiopg pool whose ``acquire`` loses a cancel on the way, as aiopg's ``connect`` does on 3.11 when
    the cancel lands with the connection's readiness (its own ``wait_for``). The rest is the pool's own."""

    def __init__(self, pool: aiopg.Pool) -> None:
        self.pool = pool
        self.release = pool.release
        self._wakeup = pool._wakeup

    @property
    def freesize(self) -> int:
        return self.pool.freesize

    def acquire(self) -> Acquiring:
        return Acquiring(self.pool)


class Acquiring:
    """Like aiopg's ``pool.acquire()``: awaited, or entered with ``async with``."""

    def __init__(self, pool: aiopg.Pool) -> None:
        self.pool = pool
        self.conn: aiopg.Connection | None = None

    async def _get(self) -> aiopg.Connection:
        await swallowing()
        return await self.pool.acquire()

    def __await__(self) -> Generator[Any, None, aiopg.Connection]:
        return self._get().__await__()

    async def __aenter__(self) -> aiopg.Connection:
        self.conn = await self._get()
        return self.conn

    async def __aexit__(self, *exc: object) -> None:
        assert self.conn is not None
        await self.pool.release(self.conn)


async def test_a_cancel_swallowed_while_the_pool_connects_is_raised_again(settings: Settings) -> None:
    """(Found by the map: ``transfer-sweep`` point 2, the sweep's first query, "returned" after its cancel
    while the pool opened a connection; ``acquired`` raises it, and gives the connection back.)"""
    async with aiopg.create_pool(settings.database_url, minsize=0, maxsize=1) as pool:
        ran = []

        async def sweep(acquire: Callable[[], Any]) -> None:
            async with acquire() as conn, conn.cursor() as cur:
                await cur.execute("SELECT 1")
                ran.append("query ran after the cancel")

        swallowing_pool = SwallowingPool(pool)
        await asyncio.create_task(sweep(swallowing_pool.acquire))  # the trap: it runs on
        assert ran == ["query ran after the cancel"]
        with pytest.raises(asyncio.CancelledError):
            await asyncio.create_task(sweep(lambda: acquired(swallowing_pool)))  # type: ignore[arg-type]
        assert ran == ["query ran after the cancel"]
        assert pool.freesize == pool.size  # the connection went back


async def test_a_variant_pool_bounds_the_wait_for_a_connection_not_a_statement(settings: Settings) -> None:
    """The variants' pools run without aiopg's timeout (a ``wait_for`` per statement: bench/RESULTS.md 2b). A
    statement longer than ``PG_TIMEOUT`` runs to its end (before: ``TimeoutError``), and the wait for a
    connection still ends at ``PG_TIMEOUT``, leaving the pool usable."""
    db = VariantDb(role="fixed", dsn=settings.variant_dsn("fixed"), maxsize=1, timeout=0.3)
    await db.open()
    try:
        async with db.pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute("SELECT pg_sleep(0.6)")
            with pytest.raises(TimeoutError):
                async with db.acquired():  # the pool's one connection is held right here
                    pass
        assert await fetch_one(db, "SELECT 1") == (1,)
    finally:
        await db.close()
