"""Postgres and Redis access: per variant an aiopg pool (as the variant's own role) and a Redis client, both
rebuildable by ``/api/reset``; and a small admin pool."""

from __future__ import annotations

import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiopg
import psycopg2
from redis.asyncio import Redis

from .tasks import CancelWatch, checked


class VariantDb:
    """A variant's aiopg pool. ``/api/reset`` swaps in a fresh pool, so handlers read ``.pool`` each time."""

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
        self._pool = await aiopg.create_pool(self.dsn, minsize=0, maxsize=self.maxsize, timeout=self.timeout)

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
async def acquired(pool: aiopg.Pool) -> AsyncIterator[aiopg.Connection]:
    """``pool.acquire()``, raising a cancellation that aiopg swallowed while it opened or gave back a connection
    (its ``connect`` awaits with ``wait_for``: on Python 3.11 a cancel landing with the result is lost). Found by
    the cancellation map: the sweep, cancelled while the pool connected, ran on as if nobody had asked."""
    cancels = CancelWatch()
    async with pool.acquire() as conn:
        cancels.raise_if_requested()
        yield conn
    cancels.raise_if_requested()


async def fetch_one(pool: aiopg.Pool, sql: str, args: object = None) -> tuple[object, ...]:
    async with acquired(pool) as conn, conn.cursor() as cur:
        await checked(cur.execute(sql, args))
        row = await cur.fetchone()
    assert row is not None
    return tuple(row)


async def fetch_all(pool: aiopg.Pool, sql: str, args: object = None) -> list[tuple[object, ...]]:
    async with acquired(pool) as conn, conn.cursor() as cur:
        await checked(cur.execute(sql, args))
        return [tuple(row) for row in await cur.fetchall()]


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
