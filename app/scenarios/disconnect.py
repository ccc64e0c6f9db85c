"""Scenario ``disconnect``: the client hangs up while the handler is in the middle of its database work.

Symptom: orders without items; Postgres backends that outlive their clients pile up until the server refuses
connections ("too many connections for role") and every request of the variant fails.
Cause: with ``handler_cancellation=True`` a hang-up raises ``CancelledError`` at whatever ``await`` the handler
is on. Between two autocommit statements that means a half-written order. Inside a query, aiopg closes the
socket and drops the connection, but the server does not notice: the backend runs its query to the end while
the pool opens a fresh connection for the next request.
Fix: one transaction whose whole unit of work is shielded by aiojobs (it completes, or rolls back as one), and
abandoned queries stopped on the server (``client_connection_check_interval``).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiojobs.aiohttp
import psycopg2
from aiohttp import web
from aiopg import Cursor

from .. import openapi, resources, validation
from ..admission import protected
from ..db import checked, fetch_one
from ..keys import admin_db_key, db_key, gates_key, long_reads_key, probe_key, variant_key
from ..scenario import Card, Figure, Load, Route, Rung, Scenario, of, shared
from ..state import VariantState
from ._common import count_failure, refused

REPORT_SQL = "SELECT pg_sleep(%s), count(*) FROM orders WHERE variant = %s"


async def broken_create_order(request: web.Request) -> web.Response:
    """Order and items are separate autocommit statements with the slow step between them: a client that hangs
    up during the hold cancels the handler right there, and the order stays behind without its items."""
    order, hold = await _order_request(request)
    async with request.app[db_key].pool.acquire() as conn, conn.cursor() as cur:
        order_id = await _write_order(request, cur, order, hold)
    return web.json_response({"order_id": order_id}, status=201)


async def fixed_create_order(request: web.Request) -> web.Response:
    """One transaction, and the whole unit of work shielded by aiojobs: the hang-up cancels the handler, not
    the write, so a started order lands whole (an error rolls all of it back). Shielding one statement is not
    enough: the cancel would then hit the next one, inside the open transaction. Shielded writes in flight are
    bounded (counting those whose client left; beyond, an order waits for a place, and beyond the queue gets a
    503), and their failures logged and counted."""
    order, hold = await _order_request(request)
    passed = await request.app[gates_key].orders.enter()
    work = protected(
        _write_order_in_transaction(request, order, hold), passed, what="order", failed=count_failure(request.app)
    )
    order_id = await aiojobs.aiohttp.shield(request, work)
    return web.json_response({"order_id": order_id}, status=201)


async def no_shield_create_order(request: web.Request) -> web.Response:
    """The ladder's middle step: one transaction, no shield. The hang-up still cancels the handler during the
    hold, and the cancel rolls the transaction back: never half an order, but the order the client started is
    gone too. A transaction buys atomicity; the shield buys finishing what was started."""
    order, hold = await _order_request(request)
    order_id = await _write_order_in_transaction(request, order, hold)
    return web.json_response({"order_id": order_id}, status=201)


async def broken_slow_report(request: web.Request) -> web.Response:
    """Nothing stops the query on the server: when the client hangs up, aiopg closes the socket, but the backend
    sleeps on for the full report while the pool opens a new connection for the next request."""
    seconds = _report_seconds(request)
    async with request.app[db_key].pool.acquire() as conn, conn.cursor() as cur:
        orders = await _run_report(request, cur, seconds)
    return web.json_response({"orders": orders, "seconds": seconds})


async def fixed_slow_report(request: web.Request) -> web.Response:
    """When the client hangs up, the query is stopped on the server (``pg_cancel_backend``), and the report
    keeps its admission place until the backend is gone: backends stay bounded at any abandon rate. The
    session also checks every 100 ms that its client is there (for a client lost without a hang-up)."""
    seconds = _report_seconds(request)
    passed = await request.app[gates_key].reports.enter()
    pid, handed_over = None, False
    try:
        async with request.app[db_key].acquired() as conn, conn.cursor() as cur:
            pid = await conn.get_backend_pid()
            await cur.execute("SET client_connection_check_interval = 100")
            orders = await _run_report(request, cur, seconds)
    except asyncio.CancelledError:
        if pid is not None:
            handed_over = True  # the place is _end_backend's now: given back once the backend is gone
            end = protected(
                _end_backend(request, pid), passed, what="report cancel", failed=count_failure(request.app)
            )
            await aiojobs.aiohttp.shield(request, end)
        raise
    finally:
        if not handed_over:
            passed.leave()
    return web.json_response({"orders": orders, "seconds": seconds})


async def order_stats(request: web.Request) -> web.Response:
    """Read through the admin pool, so the figures stay readable while the broken variant's role is refused.
    ``?customer_prefix=`` counts only those customers' orders (one load run's, for the ladder)."""
    query = dict(request.query)
    prefix = validation.text(query, "customer_prefix", max_len=100) if "customer_prefix" in query else ""
    orders, items, without_items = await fetch_one(
        request.config_dict[admin_db_key],
        """
        SELECT count(*),
               coalesce(sum(n), 0)::bigint,
               count(*) FILTER (WHERE n IS NULL)
        FROM orders o
        LEFT JOIN (SELECT order_id, count(*) AS n FROM order_items GROUP BY order_id) i ON i.order_id = o.id
        WHERE o.variant = %s AND starts_with(o.customer, %s)
        """,
        (request.app[variant_key], prefix),
    )
    return web.json_response({"orders": orders, "items": items, "orders_without_items": without_items})


# --- plumbing shared by both variants: everything below is the same for broken and fixed -----------------


async def _order_request(request: web.Request) -> tuple[validation.Order, float]:
    hold = validation.query_seconds(request, "hold", default=0.2, hi=5)
    return await validation.order(request), hold


def _report_seconds(request: web.Request) -> float:
    return validation.query_seconds(request, "seconds", default=1.0, hi=30)


async def _run_report(request: web.Request, cur: Cursor, seconds: float) -> int:
    variant = request.app[variant_key]
    request.app[probe_key].hit(f"{variant}.report")
    with request.app[long_reads_key].registered(request, request.remote or ""):  # cut at shutdown
        await checked(cur.execute(REPORT_SQL, (seconds, variant)))
        (_, orders) = await cur.fetchone()
    return int(orders)


async def _write_order(
    request: web.Request, cur: Cursor, order: validation.Order, hold: float, *, transaction: bool = False
) -> int:
    """The two INSERTs with the slow step between them; with ``transaction``, BEGIN travels with the first
    and COMMIT with the second, so the transaction costs no round trip of its own (2, as without it)."""
    variant = request.app[variant_key]
    begin, commit = ("BEGIN; ", "; COMMIT") if transaction else ("", "")
    await cur.execute(
        begin + "INSERT INTO orders (variant, customer) VALUES (%s, %s) RETURNING id", (variant, order.customer)
    )
    (order_id,) = await cur.fetchone()
    # The slow step (a payment call, a stock check) done while the order is half written.
    request.app[probe_key].hit(f"{variant}.hold")
    await asyncio.sleep(hold)
    await cur.execute(
        "INSERT INTO order_items (order_id, sku, qty) SELECT %s, sku, qty FROM unnest(%s::text[], %s::int[])"
        " AS t(sku, qty)" + commit,
        (order_id, [i.sku for i in order.items], [i.qty for i in order.items]),
    )
    return int(order_id)


async def _end_backend(request: web.Request, pid: int) -> None:
    """Cancel the backend's query and wait (bounded) until it no longer runs: the backend exits (aiopg closed our
    end of the connection) or, when aiopg kept the connection, goes idle in the pool."""
    admin = request.config_dict[admin_db_key]
    await fetch_one(admin, "SELECT pg_cancel_backend(%s)", (pid,))
    gone = "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = %s AND state = 'active'"
    async with asyncio.timeout(5):
        while not (await fetch_one(admin, gone, (pid,)))[0]:  # noqa: ASYNC110 (polling the server, bounded)
            await asyncio.sleep(0.02)


async def _write_order_in_transaction(request: web.Request, order: validation.Order, hold: float) -> int:
    """One transaction: whatever ends it early (an error, a cancel during the hold) rolls it back. A cancel
    during a statement needs no ROLLBACK: aiopg then closes the connection, and the server aborts."""
    async with request.app[db_key].acquired() as conn, conn.cursor() as cur:
        try:
            return await _write_order(request, cur, order, hold, transaction=True)
        except BaseException:
            if not conn.closed:
                with contextlib.suppress(psycopg2.Error):
                    await cur.execute("ROLLBACK")
            raise


ORDER_BODY = {
    "type": "object",
    "required": ["customer", "items"],
    "properties": {
        "customer": openapi.TEXT,
        "items": {
            "type": "array",
            "minItems": 1,
            "maxItems": 100,
            "items": {
                "type": "object",
                "required": ["sku", "qty"],
                "properties": {"sku": openapi.TEXT, "qty": {"type": "integer", "minimum": 1, "maximum": 10000}},
            },
        },
    },
}


def _order_operation(description: str) -> Any:
    return openapi.operation(
        description, "201", params=[openapi.seconds("hold", 5, 0.2)], requestBody=openapi.json_body(ORDER_BODY)
    )


def _failures(v: VariantState) -> int:
    return (v["invariants"]["orders_without_items"] or 0) + refused(v, "disconnect")


SCENARIO = Scenario(
    name="disconnect",
    title="Client hangs up mid-transaction",
    module=__name__,
    routes=(
        Route("POST", "/orders", broken_create_order, fixed_create_order, _order_operation("created")),
        shared("GET", "/orders/stats", order_stats, openapi.operation("order stats")),
        Route(
            "GET",
            "/reports/slow",
            broken_slow_report,
            fixed_slow_report,
            openapi.operation("report", params=[openapi.seconds("seconds", 30, 1)]),
        ),
    ),
    # The order's unit of work is shielded by the scheduler, which closes (waiting for it) before the pool.
    contexts=lambda variant: (resources.postgres, resources.jobs),
    reset_sql="TRUNCATE orders, order_items RESTART IDENTITY",
    card=Card(
        failures=_failures,
        failures_label="orders without items + refused requests",
        figures=(
            Figure("orders without items", lambda v: v["invariants"]["orders_without_items"]),
            Figure("requests refused (5xx)", lambda v: refused(v, "disconnect")),
            Figure(
                "server backends / limit",
                lambda v: of(v["postgres"]["backends"], v["postgres"]["role_connection_limit"]),
            ),
            Figure("pool in use / max", lambda v: of(v["postgres"]["pool_in_use"], v["postgres"]["pool_max"])),
            Figure("handlers cancelled", lambda v: v["handlers_cancelled"]),
        ),
        spark=lambda v: v["postgres"]["backends"] or 0,
        spark_label="server backends",
    ),
    load=Load(requests=400),
    targets=("orders", "reports"),
    rungs=(
        Rung(
            "no-shield",
            "a transaction, no shield",
            "never half an order, but the order a client started is rolled back when it hangs up",
            "POST",
            "/orders/no-shield",
            no_shield_create_order,
            _order_operation("created (the ladder's middle step; broken variant only)"),
        ),
    ),
)
