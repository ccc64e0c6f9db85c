"""The fan-out hub: one Redis subscription connection per process, shared by every local subscriber.

Each subscriber reads from its own bounded inbox. Policy for a slow subscriber: its oldest messages are
dropped (and counted) so the hub never waits for it, and it is told how many it missed with a ``gap`` event.
A channel is subscribed in Redis on its first local subscriber and unsubscribed after its last. If the Redis
connection dies the hub reconnects with backoff, re-subscribes, and every subscriber gets a ``gap`` event:
what was published meanwhile is lost, and the client should know it rather than see silence. The backoff
grows while connections keep dropping and resets only once one has stayed up for ``STABLE`` seconds. Any
other failure of the listener (a bug, a payload it cannot handle) is logged and treated like a lost
connection: the loop never dies while the app runs. A payload that is not UTF-8 is delivered with the bad
bytes replaced (U+FFFD), counted in ``malformed`` and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import sse, tasks
from .logs import Throttled

log = logging.getLogger("app.hub")
throttled = Throttled(log)

BYE = sse.Event("bye")
SUBSCRIBE_TIMEOUT = 5.0
FIRST_DELAY, MAX_DELAY = 0.1, 5.0  # reconnect backoff, doubling
STABLE = 5.0  # a connection up this long resets the backoff
# The hub owns reconnecting: redis-py must not retry (nor reconnect before raising, which it does even with
# 0 retries: a second connection per attempt). No supported errors means every error reaches the hub.
NO_RETRY = Retry(NoBackoff(), 0, supported_errors=())


def hub_client(url: str, *, name: str) -> Redis:
    """A Redis client fit for a hub: one connection, and errors straight to the hub."""
    return Redis.from_url(url, max_connections=1, client_name=name, retry=NO_RETRY)


class Inbox:
    """One subscriber's bounded queue. When full, the oldest message goes and ``dropped`` counts it.

    A ``deque`` and the one reader's waiter, not an ``asyncio.Queue``: one reader takes everything at once, so
    the Queue's getters, ``task_done`` bookkeeping and per-item ``get_nowait`` were work per delivery for nothing
    (the hub puts into every subscriber's inbox: bench/RESULTS.md, sections 2b and 3b)."""

    __slots__ = (
        "_closed",
        "_events",
        "_heartbeat",
        "_last_put",
        "_loop",
        "_missed",
        "_timer",
        "_waiter",
        "channel",
        "dropped",
    )

    def __init__(self, channel: str, maxsize: int) -> None:
        self.channel = channel
        self.dropped = 0
        self._events: deque[sse.Event] = deque(maxlen=maxsize)  # full: an append drops the oldest
        self._waiter: asyncio.Future[None] | None = None  # the reader's, while it waits for an event
        self._closed = False
        self._missed = 0  # dropped since the subscriber last heard about it
        self._loop = asyncio.get_running_loop()  # made by a subscribe: asking for it per put costs a getpid()
        self._last_put = self._loop.time()  # of the last event put in
        self._heartbeat = 0.0  # seconds; and its timer, while ``batches`` runs
        self._timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"<Inbox {self.channel} queued={len(self._events)} dropped={self.dropped}>"

    def put(self, event: sse.Event) -> None:
        self._last_put = self._loop.time()
        if len(self._events) == self._events.maxlen:
            self.dropped += 1
            self._missed += 1
        self._events.append(event)
        self._wake()

    def close(self) -> None:
        """End the stream with ``bye`` after what is queued: a stream must end at shutdown."""
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def events(self, *, heartbeat: float) -> AsyncIterator[sse.Event]:
        """What to send, one event at a time (see ``batches``)."""
        async for batch in self.batches(heartbeat=heartbeat):
            for event in batch:
                yield event

    async def batches(self, *, heartbeat: float) -> AsyncIterator[list[sse.Event]]:
        """What to send, in order: every event waiting when the subscriber wakes, so a stream that fell behind
        catches up in one write; a heartbeat after ``heartbeat`` quiet seconds; ends after ``bye``. One timer
        per quiet stretch, not one per message: it fires ``heartbeat`` seconds after the last event went in,
        and when events came meanwhile it only moves on to the new ``heartbeat`` after the last one."""
        loop, events = self._loop, self._events
        self._heartbeat = heartbeat
        self._timer = loop.call_at(self._last_put + heartbeat, self._beat)
        try:
            while True:
                while not events and not self._closed:
                    self._waiter = loop.create_future()
                    try:
                        await self._waiter
                    finally:
                        self._waiter = None
                batch = list(events)
                events.clear()
                if self._missed:  # told before what it gets next (the queue dropped older ones)
                    missed, self._missed = self._missed, 0
                    batch.insert(0, sse.gap(reason="slow subscriber", dropped=missed))
                if self._closed:
                    yield [*batch, BYE]
                    return
                yield batch
        finally:
            self._timer.cancel()

    def _beat(self) -> None:
        # A method, not a closure in ``batches``: a closure's cells were 7 more objects per subscriber for the
        # garbage collector to walk (at 5,000 subscribers a full collection stops every stream: section 4).
        now = self._loop.time()
        if now >= self._last_put + self._heartbeat:  # quiet: a heartbeat, unless events still wait to be sent
            if not self._events:
                self._events.append(sse.HEARTBEAT)
                self._wake()
            self._last_put = now
        self._timer = self._loop.call_at(self._last_put + self._heartbeat, self._beat)


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
        self.malformed = 0  # payloads that were not UTF-8, delivered with the bad bytes replaced
        self.delays: list[float] = []  # the backoff before each reconnect, newest last (the last 20)

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
        """Subscribed, and the listener really running (a dead task cannot be connected)."""
        return self._ready.is_set() and self._task is not None and not self._task.done()

    async def start(self, *, wait: float = 2.0) -> None:
        """Start the listener and give it ``wait`` seconds to connect; a Redis that is down does not stop the
        app from starting (subscribers get 503 until the hub is back)."""
        self._task = asyncio.create_task(self._run(), name="hub")
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._ready.wait()
        except asyncio.CancelledError:  # the app's start-up was interrupted: nobody will ever close this hub
            await self.close()
            raise

    def shutdown(self) -> None:
        """Tell every stream to end (``on_shutdown``): a handler blocked on its inbox never notices otherwise."""
        self._closing = True
        for inboxes in self._inboxes.values():
            for inbox in inboxes:
                inbox.close()

    async def close(self) -> None:
        """Stop the listener (bounded, re-cancelling: see ``tasks.stop``) and give its connection back. A
        cancellation of the caller propagates; the connection is dropped all the same."""
        self.shutdown()
        try:
            if self._task is not None:
                await tasks.stop(self._task)
        finally:
            await self._drop_connection()  # cancelled too? the client's aclose() closes what is left

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
                        await tasks.checked(self._pubsub.unsubscribe(channel))

    async def _subscribed(self, channel: str) -> None:
        """Return once Redis has confirmed the hub's subscription to ``channel``, across a reconnect if one
        happens meanwhile (it re-subscribes every channel with an inbox)."""
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                while True:
                    await self._ready.wait()
                    if channel not in self._confirmed:
                        self._confirmed[channel] = asyncio.get_running_loop().create_future()
                        await tasks.checked(self._pubsub.subscribe(channel))  # type: ignore[union-attr]
                    try:
                        return await asyncio.shield(self._confirmed[channel])
                    except RedisConnectionError:
                        continue  # the connection dropped: wait for the next one
        except TimeoutError:
            raise RedisConnectionError("hub could not subscribe: Redis unreachable") from None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        delay = FIRST_DELAY
        while not self._closing:
            up_since = None
            try:
                await self._connect()
                up_since = loop.time()
                while True:
                    self._dispatch(await self._pubsub.get_message(timeout=None))  # type: ignore[union-attr]
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning("hub lost Redis (%s); reconnecting in %.1f s", exc, delay)
            except Exception:  # a bug must not end the fan-out for the life of the process
                log.exception("hub listener failed; reconnecting in %.1f s", delay)
            if up_since is not None and loop.time() - up_since >= STABLE:
                delay = FIRST_DELAY  # that connection held: start the backoff over
            self.reconnects += 1
            self.delays = [*self.delays[-19:], delay]
            await self._drop_connection()
            for inboxes in self._inboxes.values():
                for inbox in inboxes:
                    inbox.put(sse.gap(reason="redis reconnect"))
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY)

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
            try:
                data = message["data"].decode()
            except UnicodeDecodeError:
                data = message["data"].decode(errors="replace")
                self.malformed += 1
                throttled.warning(
                    "malformed",
                    "hub: a payload on %s was not UTF-8; delivered with U+FFFD (%d so far)",
                    channel,
                    self.malformed,
                )
            event = sse.Event("message", data)
            for inbox in self._inboxes.get(channel, ()):
                inbox.put(event)
