"""Scenario ``pubsub``: per-request subscriptions exhaust the Redis pool (broken); one hub per process serves
any number of subscribers on one connection (fixed). Real Redis throughout."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from redis.asyncio import Redis

from app import sse
from app.factory import create_app
from app.hub import Hub
from app.keys import probe_key
from app.settings import VARIANTS, Settings
from scripts._sse import SseEvent, SseStream, subscribe
from tests.helpers import App, get_json, poll

POOL = 5  # both variants' Redis pools, small so exhaustion is quick to show


@pytest.fixture
def app(settings: Settings) -> web.Application:
    return create_app(
        dataclasses.replace(settings, broken_redis_max_connections=POOL, fixed_redis_max_connections=POOL)
    )


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True)) as s:
        yield s


def url(client: TestClient, path: str) -> str:
    return str(client.make_url(path))


async def open_streams(
    session: aiohttp.ClientSession, stream_url: str, n: int
) -> tuple[list[SseStream], list[tuple[int, Any]]]:
    opened: list[SseStream] = []
    refused: list[tuple[int, Any]] = []
    for _ in range(n):
        status, result = await subscribe(session, stream_url)
        if status == 200:
            opened.append(result)
        else:
            refused.append((status, result))
    return opened, refused


async def stats(client: TestClient, variant: str) -> dict:
    return await get_json(client, f"/{variant}/events/stats")


async def test_broken_exhausts_its_pool(client: TestClient, session: aiohttp.ClientSession) -> None:
    streams, refused = await open_streams(session, url(client, "/broken/events/news"), POOL + 10)
    assert len(streams) == POOL  # one pool connection per subscriber, then nothing is left
    assert refused == [(503, {"error": "redis unavailable", "detail": "MaxConnectionsError"})] * 10
    assert await stats(client, "broken") == {
        "subscribers": POOL,
        "redis_connections_in_use": POOL,
        "redis_max_connections": POOL,
    }
    resp = await client.post("/broken/events/news", json={"data": "hello"})
    assert resp.status == 503  # and every other Redis call of the variant fails too
    assert await resp.json() == {"error": "redis unavailable", "detail": "MaxConnectionsError"}
    for stream in streams:
        stream.close()


async def test_fixed_serves_many_subscribers_on_one_connection(
    client: TestClient, session: aiohttp.ClientSession
) -> None:
    n, messages = POOL * 10, 30
    streams, refused = await open_streams(session, url(client, "/fixed/events/news"), n)
    assert (len(streams), refused) == (n, [])
    figures = await stats(client, "fixed")
    assert figures["subscribers"] == n
    assert figures["redis_connections_in_use"] <= 2
    for i in range(messages):
        resp = await client.post("/fixed/events/news", json={"data": f"m{i}"})
        assert resp.status == 202
        assert await resp.json() == {"published": True, "receivers": 1}  # one subscription: the hub's
    expected = [SseEvent("message", f"m{i}") for i in range(messages)]
    received = await asyncio.gather(*(s.messages(messages) for s in streams))
    assert all(r == expected for r in received)  # every message, in order, to every subscriber
    assert (await stats(client, "fixed"))["redis_connections_in_use"] <= 2
    for stream in streams:
        stream.close()


async def test_the_middle_step_still_hits_the_wall_but_leaks_nothing(
    client: TestClient, session: aiohttp.ClientSession
) -> None:
    """The ladder's middle step (#15: a PubSub per request, closed when its stream ends): while live, each
    stream holds a connection, so POOL are served and the rest refused, and every other Redis call of the
    variant fails; once they hang up, every connection is back and the variant works again."""
    streams, refused = await open_streams(session, url(client, "/broken/events/news/closed"), POOL + 3)
    assert len(streams) == POOL and len(refused) == 3
    assert (await client.post("/broken/events/news", json={"data": "x"})).status == 503  # the wall, while live
    for stream in streams:
        stream.close()
    await client.app[probe_key].reached("broken.cancelled", POOL)
    figures = await poll(lambda: stats(client, "broken"), lambda f: f["redis_connections_in_use"] == 0)
    assert figures == {"subscribers": 0, "redis_connections_in_use": 0, "redis_max_connections": POOL}
    assert (await client.post("/broken/events/news", json={"data": "x"})).status == 202


@pytest.mark.parametrize(("variant", "leaked"), [("broken", 3), ("fixed", 0)])
async def test_hang_ups(client: TestClient, session: aiohttp.ClientSession, variant: str, leaked: int) -> None:
    """broken: a subscriber that hangs up leaves its connection checked out; fixed: nothing stays behind."""
    probe = client.app[probe_key]
    baseline = (await stats(client, variant))["redis_connections_in_use"]
    streams, _ = await open_streams(session, url(client, f"/{variant}/events/gone"), 3)
    assert len(streams) == 3
    for stream in streams:
        stream.close()
    await probe.reached(f"{variant}.cancelled", 3)
    figures = await stats(client, variant)
    assert figures["subscribers"] == 0
    assert figures["redis_connections_in_use"] - baseline == leaked
    # /api/reset gives broken its pool back; either way a new subscriber is served afterwards
    assert (await client.post("/api/reset")).status == 200
    assert (await stats(client, variant))["redis_connections_in_use"] <= baseline
    streams, refused = await open_streams(session, url(client, f"/{variant}/events/gone"), 1)
    assert (len(streams), refused) == (1, [])
    streams[0].close()


async def test_late_subscriber_gets_nothing_old(client: TestClient, session: aiohttp.ClientSession) -> None:
    await client.post("/fixed/events/late", json={"data": "before"})
    [stream], _ = await open_streams(session, url(client, "/fixed/events/late"), 1)
    await client.post("/fixed/events/late", json={"data": "after"})
    assert await stream.messages(1) == [SseEvent("message", "after")]
    stream.close()


async def test_channels_are_separate(client: TestClient, session: aiohttp.ClientSession) -> None:
    [a], _ = await open_streams(session, url(client, "/fixed/events/a"), 1)
    [b], _ = await open_streams(session, url(client, "/fixed/events/b"), 1)
    await client.post("/fixed/events/b", json={"data": "for b"})
    await client.post("/fixed/events/a", json={"data": "for a"})
    assert await a.messages(1) == [SseEvent("message", "for a")]
    assert await b.messages(1) == [SseEvent("message", "for b")]
    a.close()
    b.close()


async def test_slow_subscriber_loses_oldest_and_does_not_stall_others(redis_url: str) -> None:
    """The hub's policy, on a real Redis: a subscriber that reads nothing keeps the newest ``queue_size``
    messages and is told how many it missed; the others get everything, in order, meanwhile."""
    channel = f"pitfalls_test:hub-test:{uuid.uuid4().hex}"
    hub_redis = Redis.from_url(redis_url, max_connections=1)
    publisher = Redis.from_url(redis_url)
    hub = Hub(hub_redis, control_channel=f"{channel}:control", queue_size=10)
    await hub.start()
    try:
        assert hub.connected
        async with hub.subscribe(channel) as fast, hub.subscribe(channel) as slow:
            fast_events = fast.events(heartbeat=5)
            for i in range(100):  # the fast subscriber reads each message before the next is published
                await publisher.publish(channel, f"m{i}")
                async with asyncio.timeout(5):
                    assert await anext(fast_events) == sse.Event("message", f"m{i}")
            slow_events = slow.events(heartbeat=5)
            first = await anext(slow_events)
            assert first.kind == "gap"
            assert json.loads(first.data) == {"reason": "slow subscriber", "dropped": 90}
            rest = [(await anext(slow_events)).data for _ in range(10)]
            assert rest == [f"m{i}" for i in range(90, 100)]
            assert slow.dropped == 90 and fast.dropped == 0
    finally:
        await hub.close()
        await hub_redis.aclose()
        await publisher.aclose()


async def test_hub_recovers_after_its_connection_is_killed(
    client: TestClient, session: aiohttp.ClientSession, settings: Settings
) -> None:
    [stream], _ = await open_streams(session, url(client, "/fixed/events/survive"), 1)
    admin = Redis.from_url(settings.redis_url)
    try:
        hub_name = f"{settings.namespace}-hub"
        [hub_client] = [c for c in await admin.client_list(_type="pubsub") if c["name"] == hub_name]
        assert await admin.execute_command("CLIENT", "KILL", "ID", hub_client["id"])
        [gap] = await stream.messages(1)
        assert gap == SseEvent("gap", json.dumps({"reason": "redis reconnect"}))
        # Publish until the hub is back (PUBLISH counts the receivers); that message must arrive.
        for i in range(200):
            resp = await client.post("/fixed/events/survive", json={"data": f"ping{i}"})
            if (await resp.json())["receivers"] == 1:
                break
            await asyncio.sleep(0.05)
        assert await stream.messages(1) == [SseEvent("message", f"ping{i}")]
    finally:
        await admin.aclose()
        stream.close()


async def test_bad_channel_and_body(client: TestClient) -> None:
    for path in ["/fixed/events/" + "x" * 201, "/fixed/events/bad%20name"]:
        resp = await client.get(path)
        assert resp.status == 400
        assert "channel" in (await resp.json())["error"]
    for body in [{}, {"data": 5}, {"data": ""}]:
        resp = await client.post("/fixed/events/ok", json=body)
        assert resp.status == 400
    assert (await client.post("/fixed/events/ok", data=b"{nope")).status == 400


# --- real processes -------------------------------------------------------------------------------------------


async def test_two_processes_fan_out(spawn_app: Callable[..., App], session: aiohttp.ClientSession) -> None:
    a, b = spawn_app(), spawn_app()
    [on_a], _ = await open_streams(session, f"{a.base}/fixed/events/everywhere", 1)
    [on_b], _ = await open_streams(session, f"{b.base}/fixed/events/everywhere", 1)
    async with session.post(f"{b.base}/fixed/events/everywhere", json={"data": "from b"}) as resp:
        assert await resp.json() == {"published": True, "receivers": 2}  # one hub per process
    async with session.post(f"{a.base}/fixed/events/everywhere", json={"data": "from a"}) as resp:
        assert resp.status == 202
    for stream in (on_a, on_b):
        assert await stream.messages(2) == [SseEvent("message", "from b"), SseEvent("message", "from a")]
        stream.close()


SHUTDOWN_TIMEOUT = 4


@pytest.mark.parametrize("variant", VARIANTS)
async def test_sigterm_with_open_streams(
    spawn_app: Callable[..., App], session: aiohttp.ClientSession, variant: str
) -> None:
    """fixed: every stream is told ``bye`` and ends. broken: its streams know nothing of the shutdown, so the
    shared plumbing cuts them a second later (before: the server waited out its shutdown timeout, twice).
    Either way the server exits without waiting out its shutdown timeout."""
    app = spawn_app(SHUTDOWN_TIMEOUT=str(SHUTDOWN_TIMEOUT))
    streams, _ = await open_streams(session, f"{app.base}/{variant}/events/bye", 10)
    assert len(streams) == 10
    took = await asyncio.to_thread(app.stop, signal.SIGTERM)
    endings = await asyncio.gather(*(s.messages(1) for s in streams))
    for stream in streams:
        stream.close()
    assert endings == [[SseEvent("bye" if variant == "fixed" else "cut")]] * 10
    assert took < SHUTDOWN_TIMEOUT


async def test_fixed_streams_send_heartbeats(aiohttp_client: AiohttpClient, settings: Settings) -> None:
    """A quiet stream still writes a comment every ``sse_heartbeat`` seconds, so a dead client is noticed."""
    client = await aiohttp_client(create_app(dataclasses.replace(settings, sse_heartbeat=0.1)))
    async with aiohttp.ClientSession() as session:
        status, stream = await subscribe(session, url(client, "/fixed/events/quiet"))
        assert status == 200
        async with asyncio.timeout(5):
            assert await stream.next() == SseEvent("comment", "heartbeat")
            assert await stream.next() == SseEvent("comment", "heartbeat")
        stream.close()


async def test_subscribers_are_bounded(aiohttp_client: AiohttpClient, settings: Settings) -> None:
    """Per client address, then per process: beyond either bound a new stream gets 503 JSON."""
    bounded = dataclasses.replace(settings, max_subscribers=6, max_subscribers_per_client=4)
    client = await aiohttp_client(create_app(bounded))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True)) as session:
        streams, refused = await open_streams(session, url(client, "/fixed/events/many"), 5)
        assert len(streams) == 4
        assert refused == [(503, {"error": "too many subscribers from one client (limit 4)"})]
        for stream in streams:
            stream.close()
    await client.app[probe_key].reached("fixed.cancelled", 4)
    assert (await stats(client, "fixed"))["subscribers"] == 0


async def test_subscribers_per_process_bound(aiohttp_client: AiohttpClient, settings: Settings) -> None:
    bounded = dataclasses.replace(settings, max_subscribers=3)
    client = await aiohttp_client(create_app(bounded))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True)) as session:
        streams, refused = await open_streams(session, url(client, "/broken/events/many"), 4)
        assert len(streams) == 3
        assert refused == [(503, {"error": "too many subscribers (limit 3 per process)"})]
        for stream in streams:
            stream.close()
