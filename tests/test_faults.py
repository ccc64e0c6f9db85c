"""Faults production brings, against the real services — each test restores what it broke, whatever happens:
backends terminated mid-load, Postgres stopped and started, Redis restarted, idle and half-open connections.
The fixed variant answers 503 JSON while a dependency is gone, recovers by itself, and loses no write it
acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from app.keys import probe_key
from app.settings import Settings
from scripts._sse import SseEvent, subscribe
from tests.helpers import get_json, poll, sql

ITEMS = [{"sku": "tea", "qty": 2}, {"sku": "cup", "qty": 1}]
TRANSFER = {"from": "alice", "to": "bob", "amount": 3}


async def orders_burst(client: TestClient, n: int, concurrency: int = 10) -> list[tuple[int, dict]]:
    results: list[tuple[int, dict]] = []
    pending = iter(range(n))

    async def worker() -> None:
        for i in pending:
            resp = await client.post("/fixed/orders?hold=0.02", json={"customer": f"f{i}", "items": ITEMS})
            results.append((resp.status, await resp.json()))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


def assert_acknowledged_orders_whole(settings: Settings, results: list[tuple[int, dict]]) -> None:
    acknowledged = [body["order_id"] for status, body in results if status == 201]
    assert acknowledged, "no order got through at all"
    rows = sql(
        settings.database_url,
        "SELECT o.id, count(i.order_id) FROM orders o LEFT JOIN order_items i ON i.order_id = o.id"
        " WHERE o.id = ANY(%s) GROUP BY o.id",
        (acknowledged,),
    )
    assert {order_id: n for order_id, n in rows} == {order_id: len(ITEMS) for order_id in acknowledged}
    for status, body in results:
        assert status in (201, 503), (status, body)
        if status == 503:
            assert body["error"].startswith("database")
    (without_items,) = sql(
        settings.database_url,
        "SELECT count(*) FROM orders o WHERE NOT EXISTS (SELECT 1 FROM order_items i WHERE i.order_id = o.id)",
    )[0]
    assert without_items == 0


async def recovered(client: TestClient) -> None:
    async def order() -> int:
        return (await client.post("/fixed/orders?hold=0", json={"customer": "after", "items": ITEMS})).status

    assert await poll(order, lambda status: status == 201, timeout=30, every=0.2) == 201
    assert await poll(lambda: _status(client, "/healthz"), lambda s: s == 200, timeout=30, every=0.2) == 200


async def _status(client: TestClient, path: str) -> int:
    return (await client.get(path)).status


async def test_backends_terminated_mid_load(client: TestClient, settings: Settings) -> None:
    role = settings.role("fixed")

    async def terminate_repeatedly() -> None:
        for _ in range(5):
            await asyncio.sleep(0.1)
            await asyncio.to_thread(
                sql,
                settings.database_url,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE usename = %s AND datname = current_database()",
                (role,),
            )

    results, _ = await asyncio.gather(orders_burst(client, 300), terminate_repeatedly())
    assert_acknowledged_orders_whole(settings, results)
    await recovered(client)


# --- Postgres stopped -----------------------------------------------------------------------------------------


def _cluster() -> list[str]:
    versions = sorted(os.listdir("/etc/postgresql")) if Path("/etc/postgresql").is_dir() else []
    if not versions or shutil.which("pg_ctlcluster") is None:
        if os.environ.get("CI"):
            pytest.fail("pg_ctlcluster is needed to stop and start Postgres")
        pytest.skip("needs a Debian Postgres cluster (pg_ctlcluster) to stop and start")
    return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main"]


def _postgres_up() -> bool:
    return subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"], check=False).returncode == 0


@contextlib.contextmanager
def postgres_stopped() -> Iterator[None]:
    cluster = _cluster()
    subprocess.run([*cluster, "stop", "-m", "fast"], check=True, capture_output=True)
    try:
        yield
    finally:
        if not _postgres_up():
            subprocess.run([*cluster, "start"], check=True, capture_output=True)
        deadline = time.monotonic() + 30
        while not _postgres_up():
            assert time.monotonic() < deadline, "Postgres did not come back"
            time.sleep(0.2)


async def test_postgres_stopped_under_load(client: TestClient, settings: Settings) -> None:
    """Transfers accepted just before the outage are completed after it (they wait it out and retry); while
    Postgres is down, orders answer 503 JSON and /healthz says so; afterwards everything recovers by itself."""
    probe = client.app[probe_key]
    accepted = []
    for _ in range(5):
        resp = await client.post("/fixed/transfers?hold=1", json=TRANSFER)
        assert resp.status == 202
        accepted.append((await resp.json())["transfer_id"])
    await probe.reached("fixed.transfer", 5)  # all five are inside their transaction
    with postgres_stopped():
        resp = await client.post("/fixed/orders?hold=0", json={"customer": "down", "items": ITEMS})
        assert resp.status == 503
        assert await resp.json() == {"error": "database unavailable"}
        health = await client.get("/healthz")
        assert health.status == 503
        assert (await health.json())["checks"]["postgres"].startswith("unavailable")
        await asyncio.sleep(2)  # a few seconds of outage, as the issue asks
    await recovered(client)
    await probe.reached("fixed.committed", 5, timeout=60)
    stats = await get_json(client, "/fixed/transfers/stats")
    assert (stats["accepted"], stats["committed"], stats["lost"]) == (5, 5, 0)
    assert stats["balance_total"] == 4_000_000
    ledger = sql(
        settings.database_url, "SELECT count(*) FROM ledger WHERE transfer_id::text = ANY(%s)", (accepted,)
    )[0][0]
    assert ledger == 10  # each exactly once


# --- Redis restarted -------------------------------------------------------------------------------------------

REDIS_START = [
    "redis-server",
    "--daemonize",
    "yes",
    "--bind",
    "127.0.0.1",
    "-::1",
    "--port",
    "6379",
    "--save",
    "",
    "--appendonly",
    "no",
    "--dir",
    "/var/lib/redis",
    "--logfile",
    "/var/log/redis/ci.log",
]


def _redis_up() -> bool:
    return subprocess.run(["redis-cli", "ping"], capture_output=True, check=False).stdout.strip() == b"PONG"


@contextlib.contextmanager
def redis_stopped() -> Iterator[None]:
    if shutil.which("redis-server") is None or not Path("/var/lib/redis").is_dir():
        if os.environ.get("CI"):
            pytest.fail("redis-server is needed to restart Redis")
        pytest.skip("needs the machine's redis-server to stop and start it")
    subprocess.run(["redis-cli", "shutdown", "nosave"], capture_output=True, check=False)
    try:
        yield
    finally:
        if not _redis_up():
            subprocess.run(REDIS_START, check=True, capture_output=True)
        deadline = time.monotonic() + 30
        while not _redis_up():
            assert time.monotonic() < deadline, "Redis did not come back"
            time.sleep(0.1)


@contextlib.asynccontextmanager
async def stream(client: TestClient, channel: str) -> AsyncIterator[object]:
    async with aiohttp.ClientSession() as session:
        status, s = await subscribe(session, str(client.make_url(f"/fixed/events/{channel}")))
        assert status == 200
        try:
            yield s
        finally:
            s.close()


async def test_redis_restarted_under_streams(client: TestClient) -> None:
    async with stream(client, "survivor") as s:
        with redis_stopped():
            [gap] = await s.messages(1)  # type: ignore[attr-defined]
            assert gap == SseEvent("gap", json.dumps({"reason": "redis reconnect"}))
            resp = await client.post("/fixed/events/survivor", json={"data": "lost"})
            assert resp.status == 503 and (await resp.json())["error"] == "redis unavailable"
            assert (await client.get("/healthz")).status == 503
        for i in range(300):  # until the hub has re-subscribed (PUBLISH counts the receivers)
            resp = await client.post("/fixed/events/survivor", json={"data": f"back{i}"})
            if resp.status == 202 and (await resp.json())["receivers"] == 1:
                break
            await asyncio.sleep(0.1)
        async with asyncio.timeout(10):  # more gaps may come first: one per failed reconnect attempt
            while (event := await s.next()).kind != "message":  # type: ignore[attr-defined]
                assert event.kind in ("gap", "comment"), event
        assert event == SseEvent("message", f"back{i}")
    await recovered(client)


# --- idle and half-open connections ----------------------------------------------------------------------------


async def test_slowloris_does_not_exhaust_the_server(client: TestClient) -> None:
    """300 connections that send nothing and 100 that stop half-way through their headers: the server still
    answers /healthz and takes orders."""
    host, port = client.server.host, client.server.port
    writers = []
    try:
        for i in range(400):
            _, writer = await asyncio.open_connection(host, port)
            if i >= 300:
                writer.write(b"POST /fixed/orders HTTP/1.1\r\nHost: x\r\nContent-Len")
            writers.append(writer)
        await asyncio.sleep(0.2)
        async with asyncio.timeout(10):
            assert (await client.get("/healthz")).status == 200
            resp = await client.post("/fixed/orders?hold=0", json={"customer": "slow", "items": ITEMS})
            assert resp.status == 201
    finally:
        for writer in writers:
            writer.close()
