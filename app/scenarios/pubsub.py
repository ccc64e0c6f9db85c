"""Scenario ``pubsub``: Redis subscriptions that eat the connection pool.

Symptom: after ``max_connections`` subscribers (20 here; 100 with redis-py 8's defaults) every Redis call of
the variant fails at once — new subscribers, publishes, anything — with ``MaxConnectionsError``.
Cause: a ``PubSub`` holds a pool connection for as long as it lives, so one subscription per stream costs one
connection per subscriber; and when a client hangs up mid-stream, nothing closes the ``PubSub`` (its
``__del__`` does not return the connection), so the connection stays checked out for good.
Fix: one subscription connection per process (the hub) that fans out locally over a bounded queue per stream;
streams cost no Redis connection, and they end when the server shuts down.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractContextManager

from aiohttp import web
from redis.asyncio.client import PubSub

from .. import openapi, resources, sse, validation
from ..clients import client_address
from ..errors import BadRequest, ServiceUnavailable
from ..hub import Hub, hub_client
from ..keys import hub_key, redis_key, settings_key, streams_key, variant_key
from ..scenario import Card, Figure, Load, Route, Rung, Scenario, of, shared
from ..settings import Variant
from ._common import refused


async def broken_events(request: web.Request) -> web.StreamResponse:
    """A ``PubSub`` per request on the variant's pool: each live stream holds a pool connection, and a client
    that hangs up cancels the handler inside ``listen()`` with nothing to close the ``PubSub``: its connection
    is never returned. Once the pool is used up every Redis call of the variant fails."""
    with _admitted(request):
        pubsub = request.app[redis_key].client.pubsub()
        return await _relay(request, pubsub)


async def closed_events(request: web.Request) -> web.StreamResponse:
    """The ladder's middle step: a ``PubSub`` per request, as broken, but closed when its stream ends
    (``async with``), hang-up included: no connection leaks, and the pool recovers once the subscribers leave.
    Yet each live stream still holds a connection: while they are live, the pool is the wall."""
    with _admitted(request):
        async with request.app[redis_key].client.pubsub() as pubsub:
            return await _relay(request, pubsub)


async def fixed_events(request: web.Request) -> web.StreamResponse:
    """A local subscription to the process's hub: no Redis connection of its own, a bounded inbox (a slow
    client loses its oldest messages and is told, instead of stalling the others), heartbeats so a dead client
    is noticed, and a ``bye`` at shutdown so the stream ends instead of holding the server up."""
    channel = _channel(request)
    settings = request.app[settings_key]
    timeout = settings.sse_send_timeout
    with _admitted(request):
        async with (
            request.app[hub_key].subscribe(channel) as inbox,
            sse.stream(request, send_timeout=timeout) as stream,
        ):
            async for batch in inbox.batches(heartbeat=settings.sse_heartbeat):
                await stream.send(*batch)
    return stream.response


async def publish(request: web.Request) -> web.Response:
    """Publishing borrows a connection from the variant's pool: once broken's pool is eaten, this fails too."""
    channel = _channel(request)
    data = validation.text(await validation.json_object(request), "data", max_len=64 * 1024)
    receivers = await request.app[redis_key].client.publish(channel, data)
    return web.json_response({"published": True, "receivers": receivers}, status=202)


async def event_stats(request: web.Request) -> web.Response:
    return web.json_response(figures(request.app))


def figures(app: web.Application) -> dict[str, int]:
    """The variant's streams and Redis connections checked out right now (its pool, plus its hub's)."""
    clients = [app[redis_key].client, *([app[hub_key].redis] if hub_key in app else [])]
    return {
        "subscribers": len(app[streams_key]),
        "redis_connections_in_use": sum(len(c.connection_pool._in_use_connections) for c in clients),
        "redis_max_connections": app[redis_key].client.connection_pool.max_connections,
    }


# --- plumbing shared by both variants -----------------------------------------------------------------------


def _admitted(request: web.Request) -> AbstractContextManager[None]:
    """Bound the streams: per variant in this process, and per client address (503 JSON beyond). The check
    and the count are one synchronous step, before any await: a stream counts from the moment it is let in,
    not once its subscription is confirmed, or every concurrent request would pass the check."""
    settings, live = request.app[settings_key], request.app[streams_key]
    if len(live) >= settings.max_subscribers:
        raise ServiceUnavailable(f"too many subscribers (limit {settings.max_subscribers} per process)")
    address = client_address(request)
    if live.from_address(address) >= settings.max_subscribers_per_client:
        raise ServiceUnavailable(
            f"too many subscribers from one client (limit {settings.max_subscribers_per_client})"
        )
    return live.registered(request, address)


async def _relay(request: web.Request, pubsub: PubSub) -> web.StreamResponse:
    """Subscribe ``pubsub`` to the request's channel and relay what it hears to the stream, until the client
    leaves (broken and the middle step: what they do with the ``PubSub`` around this is the lesson)."""
    timeout = request.app[settings_key].sse_send_timeout
    await pubsub.subscribe(_channel(request))
    await pubsub.get_message(timeout=5)  # the confirmation: from now on the channel reaches us
    async with sse.stream(request, send_timeout=timeout) as stream:
        async for message in pubsub.listen():
            if message["type"] == "message":
                await stream.send(sse.Event("message", message["data"].decode()))
    return stream.response


def _channel(request: web.Request) -> str:
    """The Redis channel: namespaced by database and variant, so neither a test run nor the other variant
    ever hears it."""
    name = request.match_info["channel"]
    if not validation.CHANNEL_RE.fullmatch(name):
        raise BadRequest("channel must match [A-Za-z0-9_.:-]{1,200}")
    return f"{request.app[settings_key].namespace}:{request.app[variant_key]}:{name}"


async def hub_ctx(app: web.Application) -> AsyncIterator[None]:
    """The fixed variant's hub, on a Redis client of its own: one connection, no silent retries."""
    settings = app[settings_key]
    redis = hub_client(settings.redis_url, name=f"{settings.namespace}-hub")
    hub = Hub(redis, control_channel=f"{settings.namespace}:hub", queue_size=settings.sse_queue_size)
    await hub.start()
    app[hub_key] = hub
    yield
    try:
        await hub.close()
    finally:
        await redis.aclose()


async def _wake_streams(app: web.Application) -> None:
    app[hub_key].shutdown()


def _setup(app: web.Application, variant: Variant) -> None:
    if variant == "fixed":
        app.on_shutdown.append(_wake_streams)


PUBLISH_BODY = {
    "type": "object",
    "required": ["data"],
    "properties": {"data": {**openapi.TEXT, "maxLength": 65536}},
}

SCENARIO = Scenario(
    name="pubsub",
    title="Redis subscriptions eat the pool",
    module=__name__,
    routes=(
        shared("GET", "/events/stats", event_stats, openapi.operation("stream stats")),  # before /events/{channel}
        shared(
            "POST",
            "/events/{channel}",
            publish,
            openapi.operation(
                "published", "202", params=[openapi.CHANNEL], requestBody=openapi.json_body(PUBLISH_BODY)
            ),
        ),
        Route(
            "GET",
            "/events/{channel}",
            broken_events,
            fixed_events,
            openapi.operation("text/event-stream", params=[openapi.CHANNEL]),
        ),
    ),
    contexts=lambda variant: (resources.redis, hub_ctx) if variant == "fixed" else (resources.redis,),
    setup=_setup,
    card=Card(
        failures=lambda v: refused(v, "pubsub"),
        failures_label="refused subscribers and publishes",
        figures=(
            Figure("live subscribers", lambda v: v["subscribers"]),
            Figure(
                "Redis connections in use / max",
                lambda v: of(v["redis"]["connections_in_use"], v["redis"]["max_connections"]),
            ),
            Figure("requests refused (5xx)", lambda v: refused(v, "pubsub")),
            Figure("messages dropped (slow clients)", lambda v: v["invariants"]["messages_dropped"]),
        ),
        spark=lambda v: v["redis"]["connections_in_use"],
        spark_label="Redis connections in use",
    ),
    load=Load(requests=200),
    rungs=(
        Rung(
            "closed",
            "a PubSub per request, closed",
            "nothing leaks, but every live subscriber still holds a connection: the pool is the wall while"
            " they are live",
            "GET",
            "/events/{channel}/closed",
            closed_events,
            openapi.operation(
                "text/event-stream (the ladder's middle step; broken only)", params=[openapi.CHANNEL]
            ),
        ),
    ),
)
