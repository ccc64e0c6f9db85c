"""The fan-out hub: one Redis subscription connection per process, shared by every local subscriber.

Each subscriber reads from its own bounded inbox. Policy for a slow subscriber: its oldest messages are
dropped (and counted) so the hub never waits for it, and it is told how many it missed with a ``gap`` event.
A channel is subscribed in Redis on its first local subscriber and unsubscribed after its last. If the Redis
connection dies the hub reconnects with backoff, re-subscribes, and every subscriber gets a ``gap`` event:
what was published meanwhile is lost, and the client should know it rather than see silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import sse

log = logging.getLogger("app.hub")

BYE = sse.Event("bye")
SUBSCRIBE_TIMEOUT = 5.0


class Inbox:
    """One subscriber's bounded queue. When full, the oldest message goes and ``dropped`` counts it."""

    def __init__(self, channel: str, maxsize: int) -> None:
        self.channel = channel
        self.dropped = 0
        self._queue: asyncio.Queue[sse.Event] = asyncio.Queue(maxsize)
        self._missed = 0  # dropped since the subscriber last heard about it

    def __repr__(self) -> str:
        return f"<Inbox {self.channel} queued={self._queue.qsize()} dropped={self.dropped}>"

    def put(self, event: sse.Event) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
            self._missed += 1
        self._queue.put_nowait(event)

    def close(self) -> None:
        """Wake the subscriber with ``bye``, even past a full queue: a stream must end at shutdown."""
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(BYE)

    async def events(self, *, heartbeat: float) -> AsyncIterator[sse.Event]:
        """What to send, in order; a heartbeat after ``heartbeat`` quiet seconds; ends after ``bye``."""
        while True:
            if self._missed:
                missed, self._missed = self._missed, 0
                yield sse.gap(reason="slow subscriber", dropped=missed)
            try:
                async with asyncio.timeout(heartbeat):
                    event = await self._queue.get()
            except TimeoutError:
                yield sse.HEARTBEAT
                continue
            yield event
            if event is BYE:
                return


class Hub:
    """One ``PubSub`` per process on a connection of its own (``redis`` should be a client with a pool of one
    connection and no retries: the hub owns reconnecting), fanned out to local inboxes."""

    def __init__(self, redis: Redis, *, control_channel: str, queue_size: int = 100) -> None:
        self.redis = redis
        self._control = control_channel  # always subscribed, so the connection always has something to read
        self._queue_size = queue_size
        self._inboxes: dict[str, set[Inbox]] = defaultdict(set)
        self._confirmed: dict[str, asyncio.Future[None]] = {}
        self._pubsub: PubSub | None = None
        self._ready = asyncio.Event()  # set while the connection is up and the control channel subscribed
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.reconnects = 0

    def __repr__(self) -> str:
        return f"<Hub channels={len(self._inboxes)} subscribers={self.subscribers} reconnects={self.reconnects}>"

    @property
    def subscribers(self) -> int:
        return sum(len(inboxes) for inboxes in self._inboxes.values())

    @property
    def dropped(self) -> int:
        """Messages dropped from slow subscribers' inboxes (live subscribers only)."""
        return sum(inbox.dropped for inboxes in self._inboxes.values() for inbox in inboxes)

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    async def start(self, *, wait: float = 2.0) -> None:
        """Start the listener and give it ``wait`` seconds to connect; a Redis that is down does not stop the
        app from starting (subscribers get 503 until the hub is back)."""
        self._task = asyncio.create_task(self._run(), name="hub")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._ready.wait()

    def shutdown(self) -> None:
        """Tell every stream to end (``on_shutdown``): a handler blocked on its inbox never notices otherwise."""
        self._closing = True
        for inboxes in self._inboxes.values():
            for inbox in inboxes:
                inbox.close()

    async def close(self) -> None:
        self.shutdown()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._drop_connection()

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Inbox]:
        """A live subscription to ``channel``: once entered, everything published to it reaches the inbox."""
        if self._closing:
            raise RedisConnectionError("hub is shutting down")
        inbox = Inbox(channel, self._queue_size)
        self._inboxes[channel].add(inbox)
        try:
            await self._subscribed(channel)
            yield inbox
        finally:
            self._inboxes[channel].discard(inbox)
            if not self._inboxes[channel]:
                del self._inboxes[channel]
                self._confirmed.pop(channel, None)
                if self._pubsub is not None and self.connected:
                    with contextlib.suppress(RedisError, OSError):
                        await self._pubsub.unsubscribe(channel)

    async def _subscribed(self, channel: str) -> None:
        """Return once Redis has confirmed the hub's subscription to ``channel``, across a reconnect if one
        happens meanwhile (it re-subscribes every channel with an inbox)."""
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                while True:
                    await self._ready.wait()
                    if channel not in self._confirmed:
                        self._confirmed[channel] = asyncio.get_running_loop().create_future()
                        await self._pubsub.subscribe(channel)  # type: ignore[union-attr]
                    try:
                        return await asyncio.shield(self._confirmed[channel])
                    except RedisConnectionError:
                        continue  # the connection dropped: wait for the next one
        except TimeoutError:
            raise RedisConnectionError("hub could not subscribe: Redis unreachable") from None

    async def _run(self) -> None:
        delay = 0.1
        while not self._closing:
            try:
                await self._connect()
                delay = 0.1
                while True:
                    self._dispatch(await self._pubsub.get_message(timeout=None))  # type: ignore[union-attr]
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                self.reconnects += 1
                log.warning("hub lost Redis (%s); reconnecting in %.1f s", exc, delay)
                await self._drop_connection()
                for inboxes in self._inboxes.values():
                    for inbox in inboxes:
                        inbox.put(sse.gap(reason="redis reconnect"))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _connect(self) -> None:
        """A fresh PubSub, subscribed to the control channel and every channel with local subscribers."""
        self._confirmed = {channel: asyncio.get_running_loop().create_future() for channel in self._inboxes}
        self._confirmed[self._control] = asyncio.get_running_loop().create_future()
        self._pubsub = self.redis.pubsub()
        await self._pubsub.subscribe(*self._confirmed)

    async def _drop_connection(self) -> None:
        self._ready.clear()
        pubsub, self._pubsub = self._pubsub, None
        for fut in self._confirmed.values():
            if not fut.done():
                fut.set_exception(RedisConnectionError("hub lost its Redis connection"))
                fut.exception()  # retrieved: nobody may be waiting for it
        self._confirmed = {}
        if pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # returns the connection to the pool; __del__ would not

    def _dispatch(self, message: dict | None) -> None:
        if message is None:
            return
        channel = message["channel"].decode()
        if message["type"] == "subscribe":
            fut = self._confirmed.get(channel)
            if fut is not None and not fut.done():
                fut.set_result(None)
            if channel == self._control:
                self._ready.set()
        elif message["type"] == "message":
            event = sse.Event("message", message["data"].decode())
            for inbox in self._inboxes.get(channel, ()):
                inbox.put(event)
