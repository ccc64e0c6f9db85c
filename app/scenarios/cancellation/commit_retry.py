"""commit-retry: a client that hangs up while the server is in COMMIT gets no answer, and the handler gets a
``CancelledError``, but the server commits all the same: the purchase is written. The client, which cannot
tell, retries as it should, and a plain INSERT writes the purchase a second time.

Fix: the client sends an ``Idempotency-Key`` and the server makes it unique: the retry waits for the first
attempt's COMMIT, then finds its row and answers with it. A shield would not help here: the write did land;
what the client lacks is the answer, and only an idempotent write makes asking again safe.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
import aiopg
from aiohttp import web
from aiopg import Cursor

from ...db import acquired, fetch_one
from ...scenario import Pitfall, database_url

COMMIT_SECONDS = 0.3  # how long the server's COMMIT takes (a synchronous standby, deferred checks)
APP_NAME = "pitfall-commit-retry"  # its connections in pg_stat_activity
Save = Callable[[Cursor, str, str], Coroutine[Any, Any, int]]


async def broken_save(cur: Cursor, customer: str, key: str) -> int:
    """A plain INSERT: the retry of a purchase whose first COMMIT landed unseen is a second purchase."""
    await cur.execute("INSERT INTO purchases (customer) VALUES (%s) RETURNING id", (customer,))
    (purchase_id,) = await cur.fetchone()
    return int(purchase_id)


async def fixed_save(cur: Cursor, customer: str, key: str) -> int:
    """The key is unique: the retry waits for the first attempt's COMMIT, writes nothing, returns its row."""
    await cur.execute(
        "INSERT INTO purchases (customer, idempotency_key) VALUES (%s, %s)"
        " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
        (customer, key),
    )
    row = await cur.fetchone()
    if row is None:
        await cur.execute("SELECT id FROM purchases WHERE idempotency_key = %s", (key,))
        row = await cur.fetchone()
    return int(row[0])


def _server(pool: aiopg.Pool, save: Save) -> web.Application:
    """What every service has: POST a purchase, one transaction, 201 with its id."""

    async def purchase(request: web.Request) -> web.Response:
        customer, key = (await request.json())["customer"], request.headers["Idempotency-Key"]
        async with acquired(pool) as conn, conn.cursor() as cur:
            async with cur.begin():
                await cur.execute("SELECT set_config('pitfalls.commit_seconds', %s, true)", (str(COMMIT_SECONDS),))
                purchase_id = await save(cur, customer, key)
        return web.json_response({"purchase_id": purchase_id}, status=201)

    app = web.Application()
    app.router.add_post("/purchases", purchase)
    return app


async def _committing(pool: aiopg.Pool) -> int:
    """This run's connections now in COMMIT (its deferred trigger sleeping)."""
    (n,) = await fetch_one(
        pool,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND query = 'COMMIT'"
        " AND state = 'active'",
        (APP_NAME,),
    )
    return int(n)  # type: ignore[call-overload]


async def _until(pool: aiopg.Pool, committing: bool) -> None:
    async with asyncio.timeout(10):
        while (await _committing(pool) > 0) is not committing:  # noqa: ASYNC110 (polling the server, bounded)
            await asyncio.sleep(0.01)


async def _close(runner: web.AppRunner, listening: socket.socket, pool: aiopg.Pool) -> None:
    await runner.cleanup()  # its handlers end first (a hang-up cancels them), then their connections close
    listening.close()  # closed already, unless the run was cancelled while the site started
    pool.close()
    await pool.wait_closed()


async def measure(save: Save) -> dict[str, Any]:
    """A real HTTP server (its handlers cancelled on hang-up, as the app's are) and a real client: the client
    hangs up once the server is in COMMIT, then retries with the same key, as it would after a timeout."""
    customer, key = f"commit-retry-{uuid.uuid4().hex[:12]}", str(uuid.uuid4())
    pool = await aiopg.create_pool(database_url.get(), minsize=0, maxsize=3, application_name=APP_NAME)
    listening = socket.create_server(("127.0.0.1", 0))
    runner = web.AppRunner(_server(pool, save), handler_cancellation=True, access_log=None, shutdown_timeout=5)
    try:
        await runner.setup()
        await web.SockSite(runner, listening).start()
        host, port = listening.getsockname()[:2]
        url, body, headers = f"http://{host}:{port}/purchases", {"customer": customer}, {"Idempotency-Key": key}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:

            async def attempt() -> Any:
                async with http.post(url, json=body, headers=headers) as resp:
                    assert resp.status == 201, (resp.status, await resp.text())
                    return await resp.json()

            first = asyncio.create_task(attempt())
            try:
                await _until(pool, committing=True)
            finally:
                first.cancel()  # the client hangs up: no answer for the first attempt
                await asyncio.gather(first, return_exceptions=True)
            retried = await attempt()
        await _until(pool, committing=False)  # the first attempt's COMMIT has ended
        ids_sql = "SELECT array_agg(id ORDER BY id) FROM purchases WHERE customer = %s"
        (ids,) = await fetch_one(pool, ids_sql, (customer,))
        await fetch_one(pool, "WITH d AS (DELETE FROM purchases WHERE customer = %s) SELECT 1", (customer,))
        written = len(ids)  # type: ignore[arg-type]
    finally:
        await asyncio.shield(_close(runner, listening, pool))  # all of it, even if this run is cancelled meanwhile
    return {
        "trap": written != 1,
        "summary": (
            f"the client hung up during COMMIT and retried: one purchase was written {written} times"
            if written != 1
            else "the client hung up during COMMIT and retried: the retry found the first write, written once"
        ),
        "first_attempt_answered": not first.cancelled(),
        "purchases_written": written,
        "purchase_ids": ids,
        "retry_answer": retried,
    }


PITFALL = Pitfall("commit-retry", broken_save, fixed_save, measure)
