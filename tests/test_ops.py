"""Operator routes: /healthz, /api/state, /api/reset (CONTRACT.md)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from functools import partial

from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request
from pytest_aiohttp import AiohttpClient

from app import ops, tasks
from app.factory import create_app
from app.keys import db_key, hub_key, probe_key, redis_key, variants_key
from app.settings import VARIANTS, Settings, with_database
from tests.helpers import ROOT, Callers, free_port, get_json, poll, variant_state


async def test_healthz_ok(client: TestClient) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok", "checks": {"postgres": "ok", "redis": "ok", "hub": "ok"}}


async def test_healthz_503_when_redis_is_unreachable(aiohttp_client: AiohttpClient, settings: Settings) -> None:
    bad = Settings(database_url=settings.database_url, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    client = await aiohttp_client(create_app(bad))
    resp = await client.get("/healthz")
    assert resp.status == 503
    body = await resp.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["postgres"] == "ok"
    assert body["checks"]["redis"].startswith("unavailable")


async def test_healthz_503_when_postgres_is_unreachable(aiohttp_client: AiohttpClient, settings: Settings) -> None:
    url = settings.database_url.replace(":5432/", f":{free_port()}/")
    client = await aiohttp_client(create_app(Settings(database_url=url, redis_url=settings.redis_url)))
    resp = await client.get("/healthz")
    assert resp.status == 503
    assert (await resp.json())["checks"]["postgres"].startswith("unavailable")
    # and a scenario route says so as JSON, without the DSN
    resp = await client.post("/fixed/orders", json={"customer": "a", "items": [{"sku": "b", "qty": 1}]})
    assert resp.status == 503
    assert await resp.json() == {"error": "database unavailable"}


async def test_state_shape(client: TestClient) -> None:
    # Ready first: the start-up sweep of left-over transfers has run (it used to be a job racing this read).
    await client.app[probe_key].reached("fixed.sweep", 1)
    state = await get_json(client, "/api/state")
    assert set(state["variants"]) == set(VARIANTS)
    for variant, s in state["variants"].items():
        pg = s["postgres"]
        assert pg["role"] == f"pitfalls_test_{variant}"
        assert pg["pool_max"] == 10
        assert pg["pool_in_use"] == pg["pool_size"] - pg["pool_free"]
        assert isinstance(pg["backends"], int)
        assert pg["role_connection_limit"] == {"broken": 30, "fixed": 20}[variant]
        assert s["redis"]["max_connections"] == 20
        assert s["jobs"] == {"active": 0, "pending": 0}


async def test_reset_empties_tables_and_ends_backends(client: TestClient) -> None:
    order = {"customer": "a", "items": [{"sku": "b", "qty": 1}]}
    for variant in VARIANTS:
        assert (await client.post(f"/{variant}/orders?hold=0", json=order)).status == 201
    async with Callers(client) as callers:  # leave an orphaned backend behind on broken
        callers.start("GET", "/broken/reports/slow?seconds=30")
        await client.app[probe_key].reached("broken.report", 1)
    await client.app[probe_key].reached("broken.cancelled", 1)
    assert (await variant_state(client, "broken"))["postgres"]["backends_active"] == 1

    resp = await client.post("/api/reset")
    assert resp.status == 200
    body = await resp.json()
    assert body["reset"] is True
    assert body["terminated_backends"] >= 1  # the orphan, at least
    for variant in VARIANTS:
        assert (await get_json(client, f"/{variant}/orders/stats"))["orders"] == 0
        state = await poll(partial(variant_state, client, variant), lambda s: s["postgres"]["backends"] == 0)
        assert state["postgres"]["backends"] == 0
    # and the variants work again on their new pools
    for variant in VARIANTS:
        assert (await client.post(f"/{variant}/orders?hold=0", json=order)).status == 201


async def test_reset_refuses_non_loopback_without_token(settings: Settings) -> None:
    app = create_app(settings)
    request = make_mocked_request("POST", "/api/reset", app=app).clone(remote="192.0.2.7")
    resp = await ops.reset(request)
    assert resp.status == 403


def _request(app: web.Application, remote: str, auth: str | None = None) -> web.Request:
    headers = {"Authorization": auth} if auth else {}
    return make_mocked_request("POST", "/api/reset", headers=headers, app=app).clone(remote=remote)


def test_operator_rules(settings: Settings) -> None:
    plain = create_app(settings)
    with_token = create_app(Settings(database_url=settings.database_url, api_token="s3cret"))
    assert ops.operator_allowed(_request(plain, "127.0.0.1"))
    assert ops.operator_allowed(_request(plain, "::1"))
    assert not ops.operator_allowed(_request(plain, "192.0.2.7"))
    assert not ops.operator_allowed(_request(plain, "192.0.2.7", "Bearer "))
    assert ops.operator_allowed(_request(with_token, "192.0.2.7", "Bearer s3cret"))
    assert not ops.operator_allowed(_request(with_token, "192.0.2.7", "Bearer s3cre"))
    assert not ops.operator_allowed(_request(with_token, "192.0.2.7"))


def test_with_database_keeps_credentials() -> None:
    assert with_database("postgresql://u:p@h:5/a", "b") == "postgresql://u:p@h:5/b"


async def test_reset_with_a_redis_command_in_flight(client: TestClient) -> None:
    """A command holds a connection of the variant's Redis pool (as every command does between checkout and
    release) while ``/api/reset`` gives the pools back. Before: the reset emptied that pool's books under it,
    and the command's ``release()`` raised ``KeyError`` (a 500)."""
    pool = client.app[variants_key]["broken"][redis_key].client.connection_pool
    conn = await pool.get_connection()  # a command in flight
    assert (await client.post("/api/reset")).status == 200
    await pool.release(conn)  # the command ends: no KeyError
    resp = await client.post("/broken/events/after-reset", json={"data": "x"})
    assert resp.status == 202  # and the variant's Redis works after the reset


async def test_healthz_has_its_own_budget(client: TestClient) -> None:
    """Every connection of the fixed Postgres pool and Redis pool taken (a burst): /healthz still answers 200
    at once. Before: it queued for the same pools, timed out after 2 s and said 503."""
    fixed = client.app[variants_key]["fixed"]
    pool, redis_pool = fixed[db_key].pool, fixed[redis_key].client.connection_pool
    held = [await pool.acquire() for _ in range(pool.maxsize)]
    taken = [await redis_pool.get_connection() for _ in range(redis_pool.max_connections)]
    try:
        resp = await client.get("/healthz")
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["checks"] == {"postgres": "ok", "redis": "ok", "hub": "ok"}
    finally:
        for conn in held:
            await pool.release(conn)
        for rconn in taken:
            await redis_pool.release(rconn)


async def test_healthz_says_503_when_the_hub_is_not_listening(client: TestClient) -> None:
    hub = client.app[variants_key]["fixed"][hub_key]
    assert hub._task is not None
    await tasks.stop(hub._task)
    resp = await client.get("/healthz")
    assert resp.status == 503 and (await resp.json())["checks"]["hub"].startswith("unavailable")


def test_start_up_problems_are_one_line_each(settings: Settings) -> None:
    """A taken port and a Postgres that is down: one line saying what to do, no traceback (README, #16)."""
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        serve = subprocess.run(
            [sys.executable, "-m", "app", "--port", str(port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert serve.returncode == 1 and "Traceback" not in serve.stderr, serve.stderr
    assert f"APP_PORT={port + 1} make run" in serve.stderr
    dead = settings.database_url.replace(":5432/", f":{free_port()}/")
    migrate = subprocess.run(
        [sys.executable, "-m", "app", "migrate"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "DATABASE_URL": dead},
    )
    assert migrate.returncode == 1 and "Traceback" not in migrate.stderr, migrate.stderr
    assert "cannot reach Postgres" in migrate.stderr and "pg_ctlcluster" in migrate.stderr


async def test_reset_demo_resets_what_the_page_shows(client: TestClient) -> None:
    """After "Reset demo" /api/state and the cards count from zero (#16: the headline still showed the
    process's totals); /metrics stays monotonic, as Prometheus needs."""

    async def card(figure: str) -> str:
        figures = dict((await get_json(client, "/api/state"))["cards"]["disconnect"]["broken"]["figures"])
        return str(figures[figure])

    async with Callers(client) as callers:
        callers.start("POST", "/broken/orders?hold=5", json={"customer": "c", "items": [{"sku": "s", "qty": 1}]})
        await client.app[probe_key].reached("broken.hold", 1, timeout=10)
        await callers.hang_up()
    await poll(lambda: variant_state(client, "broken"), lambda s: s["handlers_cancelled"] == 1)
    assert await card("handlers cancelled") == "1"
    assert (await client.post("/api/reset")).status == 200
    assert await card("handlers cancelled") == "0"
    assert (await variant_state(client, "broken"))["handlers_cancelled"] == 0
    metrics = await (await client.get("/metrics")).text()
    assert 'pitfalls_handlers_cancelled_total{variant="broken"} 1.0' in metrics
