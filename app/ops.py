"""Operator routes: ``/healthz``, ``/api/state`` and ``/api/reset`` (CONTRACT.md)."""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import signal
from collections.abc import AsyncIterator, Iterable
from typing import Any

import aiojobs.aiohttp
import aiopg
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from redis.asyncio import Redis

from . import openapi, scenarios, talk
from .clients import client_address
from .db import Health, fetch_all, fetch_one
from .errors import json_error
from .keys import (
    admin_db_key,
    baseline_key,
    db_key,
    draining_key,
    health_key,
    hub_key,
    metrics_key,
    probe_key,
    redis_key,
    scenarios_key,
    settings_key,
    traffic_key,
    variants_key,
)
from .scenario import Scenario, show
from .scenarios import pubsub
from .scenarios.cancellation import PITFALLS
from .settings import VARIANTS
from .state import CardState, Snapshot, VariantState

log = logging.getLogger("app.ops")

LOOPBACK = {"127.0.0.1", "::1"}
HEALTH_TIMEOUT = 2.0


async def ping(request: web.Request) -> web.Response:
    """A trivial endpoint: what the HTTP stack alone costs (benchmarks compare load generators on it)."""
    return web.Response(text="pong")


async def healthz(request: web.Request) -> web.Response:
    """200 when the *fixed* variant reaches Postgres and Redis and its hub listens: the broken one may be
    down on purpose. Checked on connections of its own (``health_ctx``), so a burst that takes every pooled
    connection cannot make a healthy service look down."""
    if request.app[draining_key].is_set():
        return web.json_response({"status": "draining"}, status=503)  # drain_on_signals: take me out
    health, fixed = request.app[health_key], request.app[variants_key]["fixed"]
    checks = {
        "postgres": await _check(fetch_one(health.pg, "SELECT 1")),
        "redis": await _check(health.redis.ping()),
        "hub": "ok" if fixed[hub_key].connected else "unavailable: not subscribed",
    }
    healthy = all(v == "ok" for v in checks.values())
    return web.json_response(
        {"status": "ok" if healthy else "unavailable", "checks": checks}, status=200 if healthy else 503
    )


async def drain_on_signals(app: web.Application) -> None:
    """``python -m app`` only (on_startup): SIGTERM or SIGINT first drains for ``DRAIN_SECONDS`` — still
    serving, but /healthz says 503 ``draining``, so a proxy's health check takes this process out while it
    still serves — then stops as aiohttp does (``GracefulExit``: in-flight work finishes, clean-ups run).
    A second signal stops at once."""
    loop, draining = asyncio.get_running_loop(), app[draining_key]
    seconds = app[settings_key].drain_seconds

    def stop() -> None:
        raise web.GracefulExit  # out of the loop, as aiohttp's own signal handler does

    def on_signal() -> None:
        if draining.is_set() or seconds <= 0:
            stop()
        draining.set()
        log.info("draining for %.1f s: /healthz says 503", seconds)
        loop.call_later(seconds, stop)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)


async def health_ctx(app: web.Application) -> AsyncIterator[None]:
    """The health check's own connections: a pool of one as the fixed role, a Redis client of one."""
    settings = app[settings_key]
    redis = Redis.from_url(settings.redis_url, max_connections=1)
    pg = await aiopg.create_pool(settings.variant_dsn("fixed"), minsize=0, maxsize=1, timeout=HEALTH_TIMEOUT)
    app[health_key] = Health(pg, redis)
    yield
    pg.terminate()
    await pg.wait_closed()
    await redis.aclose()


async def _check(probe: Any) -> str:
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT):
            await probe
    except Exception as exc:  # any failure means unhealthy; CancelledError still propagates
        return f"unavailable: {type(exc).__name__}"
    return "ok"


async def state(request: web.Request) -> web.Response:
    return web.json_response(await snapshot(request.app))


async def metrics(request: web.Request) -> web.Response:
    body = request.app[metrics_key].render(await snapshot(request.app, since_last_reset=False))
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def snapshot(app: web.Application, *, since_last_reset: bool = True) -> Snapshot:
    """Per variant: pool, server backends of the variant's role, Redis, aiojobs, requests and invariants.
    Read through the admin pool, so it stays readable while a variant's own role is refused."""
    variants = app[variants_key]
    roles = [sub[db_key].role for sub in variants.values()]
    try:
        rows = await fetch_all(
            app[admin_db_key],
            """
            SELECT r.rolname, r.rolconnlimit,
                   count(a.pid) FILTER (WHERE a.datname = current_database()),
                   count(a.pid) FILTER (WHERE a.datname = current_database() AND a.state = 'active'),
                   count(a.pid)
            FROM pg_roles r LEFT JOIN pg_stat_activity a ON a.usename = r.rolname
            WHERE r.rolname = ANY(%s) GROUP BY r.rolname, r.rolconnlimit
            """,
            (roles,),
        )
        backends: dict[Any, tuple[Any, ...]] = {row[0]: row[1:] for row in rows}
        invariant_rows = await fetch_all(app[admin_db_key], INVARIANTS_SQL, (list(VARIANTS),))
        invariants: dict[Any, dict[str, Any]] = {
            row[0]: {"orders_without_items": row[1], "transfers_lost": row[2]} for row in invariant_rows
        }
        pg_error = None
    except Exception as exc:
        backends, invariants, pg_error = {}, {}, type(exc).__name__
    probe = app[probe_key]
    traffic = app[traffic_key]
    out: dict[str, VariantState] = {}
    for variant, sub in variants.items():
        db = sub[db_key]
        pool = db.pool
        limit, here, active, cluster = backends.get(db.role, (None, None, None, None))
        redis = pubsub.figures(sub)
        scheduler = aiojobs.aiohttp.get_scheduler_from_app(sub)
        out[variant] = {
            "postgres": {
                "role": db.role,
                "pool_max": db.maxsize,
                "pool_size": pool.size,
                "pool_free": pool.freesize,
                "pool_in_use": pool.size - pool.freesize,
                "backends": here,
                "backends_active": active,
                "role_connections": cluster,
                "role_connection_limit": limit,
                "error": pg_error,
            },
            "redis": {
                "connections_in_use": redis["redis_connections_in_use"],
                "max_connections": redis["redis_max_connections"],
            },
            "subscribers": redis["subscribers"],
            "jobs": {
                "active": scheduler.active_count if scheduler else 0,
                "pending": scheduler.pending_count if scheduler else 0,
            },
            "handlers_cancelled": probe.counts[f"{variant}.cancelled"],
            "protected_errors": probe.counts[f"{variant}.protected_errors"],
            "in_flight": traffic.in_flight_of(variant),
            "requests": traffic.requests_of(variant),
            "invariants": {
                "orders_without_items": invariants.get(variant, {}).get("orders_without_items"),
                "transfers_lost": invariants.get(variant, {}).get("transfers_lost"),
                "messages_dropped": sub[hub_key].dropped if hub_key in sub else 0,
            },
        }
    if since_last_reset:
        out = {variant: since_reset(state, app[baseline_key].get(variant)) for variant, state in out.items()}
    served = app[scenarios_key]
    return {"variants": out, "cards": cards(served, out), "pid": os.getpid()}


def since_reset(state: VariantState, baseline: VariantState | None) -> VariantState:
    """The variant's counters counted from the last reset (/api/state and the page: "Reset demo" resets what is
    on screen), its gauges as they are. /metrics keeps the process's own, monotonic counters."""
    if baseline is None:
        return state
    requests = {
        scenario: {k: n - baseline["requests"].get(scenario, {}).get(k, 0) for k, n in outcomes.items()}
        for scenario, outcomes in state["requests"].items()
    }
    return {
        **state,
        "handlers_cancelled": state["handlers_cancelled"] - baseline["handlers_cancelled"],
        "protected_errors": state["protected_errors"] - baseline["protected_errors"],
        "requests": requests,
    }


def cards(served: Iterable[Scenario], variants: dict[str, VariantState]) -> dict[str, dict[str, CardState]]:
    """Each scenario's card, per variant, read off the snapshot by the scenario's own ``Card``."""
    out: dict[str, dict[str, CardState]] = {}
    for scenario in served:
        if (card := scenario.card) is None:
            continue
        out[scenario.name] = {
            variant: {
                "failures": card.failures(v),
                "figures": [(figure.label, show(figure.read(v))) for figure in card.figures],
                "spark": card.spark(v),
            }
            for variant, v in variants.items()
        }
    return out


async def openapi_document(request: web.Request) -> web.Response:
    served = request.app[scenarios_key]
    return web.json_response(openapi.document(served))


async def scenario_list(request: web.Request) -> web.Response:
    """The scenarios, the gallery and the talk, as the dashboard builds its page from them."""
    served: tuple[Scenario, ...] = request.app[scenarios_key]
    return web.json_response(
        {
            "variants": list(VARIANTS),
            "scenarios": [
                {
                    "name": s.name,
                    "title": s.title,
                    "source": s.source,
                    "load": s.load is not None,
                    "failures_label": s.card.failures_label,
                    "ladder": [r.title for r in s.rungs],
                    "spark_label": s.card.spark_label,
                }
                for s in served
                if s.card is not None
            ],
            "pitfalls": [{"name": p.name, "summary": p.summary, "source": p.source} for p in PITFALLS.values()],
            "talk": talk.described(served),
        }
    )


# Orders without items; transfers accepted and not committed (in-flight ones included).
INVARIANTS_SQL = """
SELECT v,
       (SELECT count(*) FROM orders o WHERE o.variant = v
          AND NOT EXISTS (SELECT 1 FROM order_items i WHERE i.order_id = o.id)),
       (SELECT count(*) FROM transfers t WHERE t.variant = v AND t.status <> 'committed')
FROM unnest(%s::text[]) AS v
"""


async def reset(request: web.Request) -> web.Response:
    """Empty the scenario tables, rebuild each variant's pools and end whatever backends they left behind.
    Loopback clients, or a client presenting ``Authorization: Bearer $API_TOKEN``; 403 for anyone else."""
    if not operator_allowed(request):
        return json_error(403, "reset is allowed from loopback or with the API token only")
    variants = request.app[variants_key]
    admin = request.app[admin_db_key]
    for sub in variants.values():
        await sub[db_key].rebuild()
        await sub[redis_key].rebuild()  # closes leaked subscription connections too
    # Orphaned queries still hold their locks: end them before TRUNCATE, or it waits for them.
    (terminated,) = await fetch_one(
        admin,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE datname = current_database() AND usename = ANY(%s)",
        ([sub[db_key].role for sub in variants.values()],),
    )
    served = request.app[scenarios_key]
    await fetch_one(admin, f"SET lock_timeout = '5s'; {scenarios.reset_sql(served)}; SELECT 1")
    # /api/state and the page count from here; /metrics does not (Prometheus counters stay monotonic)
    request.app[baseline_key].update((await snapshot(request.app, since_last_reset=False))["variants"])
    log.info("reset: %s variant backends terminated", terminated)
    return web.json_response({"reset": True, "terminated_backends": terminated})


def operator_allowed(request: web.Request) -> bool:
    """Loopback clients, or a client presenting ``Authorization: Bearer $API_TOKEN`` (constant-time)."""
    if client_address(request) in LOOPBACK:
        return True
    token = request.app[settings_key].api_token
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").encode()
    return token is not None and hmac.compare_digest(given, token.encode())


ROUTES = [
    web.get("/api/openapi.json", openapi_document),
    web.get("/api/scenarios", scenario_list),
    web.get("/ping", ping),
    web.get("/healthz", healthz),
    web.get("/api/state", state),
    web.get("/metrics", metrics),
    web.post("/api/reset", reset),
]
