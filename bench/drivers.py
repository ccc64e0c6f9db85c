"""The fixed order write through three drivers, each with its own pool of 10: aiopg, asyncpg, psycopg 3.

Throughput: a closed loop of transactions. Cancellation: 200 transactions, each cancelled at a random moment
of its life (mid-query included); afterwards, how many committed although their task was cancelled (the
3.11 ``wait_for`` race), whether the pool still works, and whether any session was left idle in a transaction.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import aiopg
import asyncpg
import psycopg
import psycopg_pool

from .harness import spread

Write = Callable[[str, float], Coroutine[Any, Any, None]]
ITEMS = [("tea", 2), ("cup", 1), ("pot", 1)]
ORDER = "INSERT INTO orders (variant, customer) VALUES ('fixed', {p}) RETURNING id"
ITEM = (
    "INSERT INTO order_items (order_id, sku, qty)"
    " SELECT {p}, sku, qty FROM unnest({p}::text[], {p}::int[]) AS t(sku, qty)"
)


@asynccontextmanager
async def with_aiopg(dsn: str) -> AsyncIterator[Write]:
    async with aiopg.create_pool(dsn, minsize=10, maxsize=10) as pool:

        async def write(customer: str, hold: float) -> None:
            async with pool.acquire() as conn, conn.cursor() as cur, cur.begin():
                await cur.execute(ORDER.format(p="%s"), (customer,))
                (order_id,) = await cur.fetchone()
                if hold:
                    await asyncio.sleep(hold)
                await cur.execute(ITEM.format(p="%s"), (order_id, [s for s, _ in ITEMS], [q for _, q in ITEMS]))

        yield write


@asynccontextmanager
async def with_asyncpg(dsn: str) -> AsyncIterator[Write]:
    pool = await asyncpg.create_pool(dsn, min_size=10, max_size=10)
    try:

        async def write(customer: str, hold: float) -> None:
            async with pool.acquire() as conn, conn.transaction():
                order_id = await conn.fetchval(ORDER.format(p="$1"), customer)
                if hold:
                    await asyncio.sleep(hold)
                await conn.execute(
                    ITEM.replace("{p}", "$1", 1).replace("{p}", "$2", 1).replace("{p}", "$3", 1),
                    order_id,
                    [s for s, _ in ITEMS],
                    [q for _, q in ITEMS],
                )

        yield write
    finally:
        await pool.close()


@asynccontextmanager
async def with_psycopg(dsn: str) -> AsyncIterator[Write]:
    pool = psycopg_pool.AsyncConnectionPool(dsn, min_size=10, max_size=10, open=False)
    await pool.open(wait=True)
    try:

        async def write(customer: str, hold: float) -> None:
            async with pool.connection() as conn, conn.transaction():
                cur = await conn.execute(ORDER.format(p="%s"), (customer,))
                (order_id,) = await cur.fetchone()  # type: ignore[misc]
                if hold:
                    await asyncio.sleep(hold)
                await conn.execute(ITEM.format(p="%s"), (order_id, [s for s, _ in ITEMS], [q for _, q in ITEMS]))

        yield write
    finally:
        await pool.close()


DRIVERS = {"aiopg": with_aiopg, "asyncpg": with_asyncpg, "psycopg3": with_psycopg}


async def compare(dsn: str, seconds: float, concurrency: int, *, smoke: bool) -> dict[str, Any]:
    reps, cancels = (1, 40) if smoke else (3, 200)
    out: dict[str, Any] = {}
    for name, opener in DRIVERS.items():
        rates = []
        async with opener(dsn) as write:
            for _ in range(reps):
                rates.append(await _throughput(write, seconds, concurrency))
            cancellation = await _cancellation(dsn, write, cancels)
        out[name] = {"tx_per_s": spread(rates), **cancellation}
    base = out["aiopg"]["tx_per_s"]["median"]
    for name in DRIVERS:
        out[name]["ratio_to_aiopg"] = round(out[name]["tx_per_s"]["median"] / base, 3) if base else None
    return out


async def _throughput(write: Write, seconds: float, concurrency: int) -> float:
    done = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await write("bench-driver", 0)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return round(done / (time.perf_counter() - started), 1)


async def _cancellation(dsn: str, write: Write, n: int) -> dict[str, Any]:
    tag = f"cancel-{uuid.uuid4().hex[:8]}"
    rng = random.Random(1)
    tasks = [asyncio.create_task(write(f"{tag}-{i}", 0.005)) for i in range(n)]
    hit: dict[int, bool] = {}  # cancel() returned True: the task was still running when cancelled

    def cancel(i: int) -> None:
        hit[i] = tasks[i].cancel()

    for i in range(n):  # each cancelled at a random moment of a ~10 ms life
        asyncio.get_running_loop().call_later(rng.uniform(0, 0.012), cancel, i)
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(0.02)  # every scheduled cancel() has run
    cancelled = {f"{tag}-{i}" for i, o in enumerate(outcomes) if isinstance(o, asyncio.CancelledError)}
    # Cancelled while running, yet it returned normally: the cancellation was swallowed (3.11 wait_for race).
    swallowed = {f"{tag}-{i}" for i, o in enumerate(outcomes) if o is None and hit.get(i)}
    errors = sum(isinstance(o, Exception) for o in outcomes)
    usable = True
    try:
        async with asyncio.timeout(10):
            await asyncio.gather(*(write("bench-after", 0) for _ in range(20)))
    except Exception:
        usable = False
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
        cur = await admin.execute("SELECT customer FROM orders WHERE customer LIKE %s", (f"{tag}-%",))
        committed = {row[0] for row in await cur.fetchall()}
        cur = await admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND state LIKE 'idle in transaction%%'"
        )
        (idle_in_tx,) = await cur.fetchone()  # type: ignore[misc]
    return {
        "cancel_landed": sum(hit.values()),
        "cancelled": len(cancelled),
        "cancellation_swallowed": len(swallowed),
        "swallowed_and_committed": len(swallowed & committed),
        "errors": errors,
        # The client saw CancelledError, the server had committed: a cancel during COMMIT's round trip.
        "committed_although_cancelled": len(cancelled & committed),
        "idle_in_transaction_after": idle_in_tx,
        "pool_usable_after": usable,
    }
