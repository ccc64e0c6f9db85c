"""The fixed side's fan-out hub under the failures a review found: a payload that is not UTF-8, a Redis (or a
proxy) that accepts and then drops every connection, a server that never answers, and a close that is itself
cancelled at each of its suspension points."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis.asyncio

from app import cancelmap
from app.hub import Hub, Inbox, hub_client
from app.settings import Settings
from scripts import _plumbing
from tests.helpers import poll

pytestmark = pytest.mark.usefixtures("settings")


@dataclass
class Relay:
    """A TCP relay in front of Redis that can drop every connection once its subscription is confirmed
    (``flap``), or never forward anything at all (``blackhole``). Counts the connections it accepted."""

    upstream: tuple[str, int]
    flap: bool = False
    blackhole: bool = False
    accepted: int = 0
    port: int = 0
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.append(writer)
        if self.blackhole:
            with contextlib.suppress(ConnectionError):
                while await reader.read(65536):
                    pass
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self._writers.append(up_writer)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, watch: bool) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    if watch and self.flap and b"subscribe" in data:
                        await asyncio.sleep(0.05)  # up long enough to be confirmed, then gone
                        break
            dst.close()
            writer.close()
            up_writer.close()

        await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Relay]:
        server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        async with server:
            yield self
            for w in self._writers:
                w.close()


def relay_for(settings: Settings, **kwargs: Any) -> Relay:
    url = urlsplit(settings.redis_url)
    return Relay((url.hostname or "127.0.0.1", url.port or 6379), **kwargs)


def url_via(settings: Settings, relay: Relay) -> str:
    url = urlsplit(settings.redis_url)
    return url._replace(netloc=f"127.0.0.1:{relay.port}").geturl()


@contextlib.asynccontextmanager
async def started_hub(url: str, *, wait: float = 2.0) -> AsyncIterator[Hub]:
    client = hub_client(url, name="test-hub")
    hub = Hub(client, control_channel="pitfalls_test:hub-test")
    await hub.start(wait=wait)
    try:
        yield hub
    finally:
        await hub.close()
        await client.aclose()


async def next_message(inbox: Inbox, timeout: float = 5.0) -> str:
    async with asyncio.timeout(timeout):
        async for event in inbox.events(heartbeat=60):
            if event.kind == "message":
                return event.data
    raise AssertionError("stream ended")


async def test_a_payload_that_is_not_utf8_does_not_kill_the_hub(settings: Settings) -> None:
    """Before: the strict decode raised in the listener, the task died, ``connected`` still said true and no
    message reached any subscriber again."""
    publisher = redis.asyncio.Redis.from_url(settings.redis_url)
    try:
        async with started_hub(settings.redis_url) as hub, hub.subscribe("pitfalls_test:bytes") as inbox:
            await publisher.publish("pitfalls_test:bytes", b"\xff\xfe")
            await publisher.publish("pitfalls_test:bytes", "still here")
            assert await next_message(inbox) == "\ufffd\ufffd"  # delivered, bad bytes replaced
            assert await next_message(inbox) == "still here"
            assert hub.malformed == 1
            assert hub.connected
    finally:
        await publisher.aclose()


async def test_connected_is_false_once_the_listener_is_dead(settings: Settings) -> None:
    async with started_hub(settings.redis_url) as hub:
        assert hub.connected
        assert hub._task is not None
        hub._task.cancel()  # whatever ends it: a dead listener is not a connected hub
        await asyncio.wait({hub._task}, timeout=5)
        assert not hub.connected


async def test_a_flapping_server_backs_off_instead_of_churning(settings: Settings) -> None:
    """A server that confirms the subscription and drops the connection at once. Before: the backoff reset on
    every confirmed subscription, so the hub reconnected every 0.1 s, and each attempt cost two connections
    (redis-py reconnects before raising, even with 0 retries)."""
    loop = asyncio.get_running_loop()
    async with relay_for(settings, flap=True).running() as relay:
        started = loop.time()
        async with started_hub(url_via(settings, relay)) as hub:
            await poll(lambda: asyncio.sleep(0, hub.reconnects), lambda n: n >= 5, timeout=20, every=0.02)
            elapsed = loop.time() - started
            # A lower bound only (a slow machine can only make it longer): 0.1 + 0.2 + 0.4 + 0.8 s of backoff.
            assert elapsed >= 1.5, f"5 reconnects in {elapsed:.2f} s: the backoff does not grow"
            assert relay.accepted <= hub.reconnects + 1, f"{relay.accepted} connections for {hub.reconnects}"
            assert hub.delays[:5] == [0.1, 0.2, 0.4, 0.8, 1.6]


@pytest.mark.parametrize("state", ["connected", "stuck"])
async def test_closing_the_hub_cancelled_at_every_point(settings: Settings, state: str) -> None:
    """``Hub.close`` cancelled at each of its suspension points (what SIGTERM after a hang-up, or a cleanup
    timeout, does): it must end, let the caller's cancellation through, and leave no listener running.
    Before: ``suppress(CancelledError)`` around ``await task`` swallowed the caller's cancel."""
    async with relay_for(settings, blackhole=True).running() as relay:
        url = settings.redis_url if state == "connected" else url_via(settings, relay)
        trials = await _plumbing.hub_close(url, connected=state == "connected").explore(depth=2)
    assert trials, "close() never suspended: nothing was explored"
    assert all(t.held for t in trials), cancelmap.table(trials)


async def test_a_cancelled_start_leaves_no_listener(settings: Settings) -> None:
    """``Hub.start`` cancelled while it waits for Redis (the app's start-up interrupted): nobody will ever
    close that hub, so the start must. Before: the listener kept running (the map: hub-start reproduced)."""
    trials = await _plumbing.hub_start(settings.redis_url).explore(depth=2)
    assert trials, "start() never suspended"
    assert all(t.held for t in trials), cancelmap.table(trials)


async def test_a_stream_cancelled_anywhere_leaves_no_subscription(settings: Settings) -> None:
    """A stream's subscription cancelled at each point of subscribe/unsubscribe: the cancel reaches the
    caller and Redis stops sending the channel. Before: redis-py's own wait_for (Python 3.11) swallowed a
    cancel that landed with the SUBSCRIBE or UNSUBSCRIBE reply: the caller "returned" and streamed on."""
    trials = await _plumbing.hub_subscribe(settings.redis_url).explore(depth=2)
    assert trials, "subscribe() never suspended"
    assert all(t.held for t in trials), cancelmap.table(trials)
