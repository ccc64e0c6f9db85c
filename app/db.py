"""Postgres and Redis access: per variant an aiopg pool (as the variant's own role) and a Redis client, both
rebuildable by ``/api/reset``; and a small admin pool."""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import aiopg
import psycopg2
from redis.asyncio import Redis

from .tasks import CancelWatch, checked


class VariantDb:
    """A variant's aiopg pool. ``/api/reset`` swaps in a fresh pool, so handlers read ``.pool`` (or call
    ``acquired()``) each time.

    The pool has no aiopg ``timeout``: aiopg awaits every statement with ``wait_for(..., timeout)``, which costs a
    timer, a future and a loop turn per statement (~8 % of a fixed order's instructions, bench/RESULTS.md 2b),
    and is the 3.11 ``wait_for`` that can swallow a cancel. ``timeout`` bounds the wait for a connection instead
    (``acquired()``); a statement runs until it ends or its caller is cancelled, as with asyncpg's and psycopg
    3's defaults."""

    def __init__(self, *, role: str, dsn: str, maxsize: int, timeout: float = 60.0) -> None:
        self.role = role
        self.dsn = dsn
        self.maxsize = maxsize
        self.timeout = timeout
        self._pool: aiopg.Pool | None = None

    def __repr__(self) -> str:
        return f"<VariantDb role={self.role} maxsize={self.maxsize} pool={self._pool!r}>"

    @property
    def pool(self) -> aiopg.Pool:
        assert self._pool is not None, "VariantDb used before open()"
        return self._pool

    async def open(self) -> None:
        # minsize=0: the app starts (and /healthz says 503) even while Postgres is down.
        # timeout=None: no wait_for per statement (aiopg takes None, though its hint says float).
        self._pool = await aiopg.create_pool(
            self.dsn,
            minsize=0,
            maxsize=self.maxsize,
            timeout=None,  # type: ignore[arg-type]
        )

    def acquired(self) -> AbstractAsyncContextManager[aiopg.Connection]:
        """A connection of the current pool, waited for at most ``timeout`` seconds (then ``TimeoutError``)."""
        return acquired(self.pool, timeout=self.timeout)

    async def rebuild(self) -> None:
        """Replace the pool; the old one's connections are closed at once, in flight or not."""
        old = self._pool
        await self.open()
        if old is not None:
            old.terminate()
            await old.wait_closed()

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            await self._pool.wait_closed()


@asynccontextmanager
async def acquired(pool: aiopg.Pool, *, timeout: float | None = None) -> AsyncIterator[aiopg.Connection]:
    """``pool.acquire()`` that a cancel cannot spoil for the next request. aiopg's pool wakes one waiter per
    connection given back, and two cancels lose that wake-up: one landing just after the waiter was woken
    (its ``asyncio.Condition`` passes it to nobody on Python 3.11 and 3.12), and one in a query (aiopg closes
    the connection, and the release of a closed connection wakes nobody, though the pool could open a new one).
    The next waiter then starves until its timeout (gallery: pool-wait). Here each passes a wake-up on (a
    spare one only makes a waiter look again). The release is shielded: a cancel there would cancel its
    wake-up too. And a cancel that aiopg swallowed (its connect awaits with ``wait_for``: on 3.11 a cancel
    landing with the result is lost) is raised again (found by the cancellation map: the sweep ran on).
    ``timeout`` bounds the wait for a connection (a pool made without aiopg's own)."""
    cancels = CancelWatch()
    try:
        # Only a wait needs the bound: a free connection is taken without a timer (its own cost: ~3 % of an order).
        async with asyncio.timeout(timeout if not pool.freesize else None):
            conn = await pool.acquire()
    except (asyncio.CancelledError, TimeoutError):
        _wake_next(pool)
        raise
    try:
        cancels.raise_if_requested()
        yield conn
    finally:
        closed = conn.closed
        await asyncio.shield(pool.release(conn))
        if closed:
            _wake_next(pool)
    cancels.raise_if_requested()


_waking: set[asyncio.Task[None]] = set()  # held until they ran: the loop keeps only weak references


def _wake_next(pool: aiopg.Pool) -> None:
    """Wake one waiter of the pool, as aiopg's release does (``Pool._wakeup``, aiopg 1.4)."""
    task = asyncio.ensure_future(pool._wakeup())
    _waking.add(task)
    task.add_done_callback(_waking.discard)


async def fetch_one(source: aiopg.Pool | VariantDb, sql: str, args: object = None) -> tuple[object, ...]:
    async with _connection(source) as conn, conn.cursor() as cur:
        await checked(cur.execute(sql, args))
        row = await cur.fetchone()
    assert row is not None
    return tuple(row)


async def fetch_all(source: aiopg.Pool | VariantDb, sql: str, args: object = None) -> list[tuple[object, ...]]:
    async with _connection(source) as conn, conn.cursor() as cur:
        await checked(cur.execute(sql, args))
        return [tuple(row) for row in await cur.fetchall()]


def _connection(source: aiopg.Pool | VariantDb) -> AbstractAsyncContextManager[aiopg.Connection]:
    return source.acquired() if isinstance(source, VariantDb) else acquired(source)


def connection_lost(exc: BaseException) -> bool:
    """The database went away under us: a connection-level error, or aiopg's pool tripping over a pooled
    connection that died while it was handing it out (``assert not conn.closed`` in ``Pool._acquire``: seen when
    backends are terminated under load)."""
    if isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError):
        return True
    if isinstance(exc, AssertionError):
        frames = traceback.extract_tb(exc.__traceback__)
        return bool(frames) and frames[-1].filename.endswith("aiopg/pool.py")
    return False


@dataclass(frozen=True)
class Health:
    """``/healthz``'s own connections, so a busy pool cannot fail the check."""

    pg: aiopg.Pool  # one connection, as the fixed variant's role
    redis: Redis  # one connection


class VariantRedis:
    """A variant's Redis client. ``/api/reset`` swaps in a fresh one, so handlers read ``.client`` each time;
    a command in flight on the old one ends with a connection error, never with the new pool's bookkeeping."""

    def __init__(self, *, url: str, max_connections: int | None) -> None:
        self.url = url
        self.max_connections = max_connections
        self.client = self._new()

    def __repr__(self) -> str:
        return f"<VariantRedis max_connections={self.max_connections}>"

    def _new(self) -> Redis:
        return Redis.from_url(self.url, max_connections=self.max_connections)

    async def rebuild(self) -> None:
        """Replace the client; the old one's connections (leaked subscriptions included) are closed at once."""
        old, self.client = self.client, self._new()
        await old.aclose()

    async def close(self) -> None:
        await self.client.aclose()
