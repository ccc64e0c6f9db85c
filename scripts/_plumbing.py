"""The app's own plumbing as units for the cancellation map: each a ``reset`` that builds a fresh, running
piece, a ``unit`` that closes it (the step a cancel can land in), and an ``invariant`` for afterwards.
Used by ``python -m scripts.explore`` and by the tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from redis.asyncio import Redis

from app import cancelmap, sse
from app.dashboard import publisher_ctx
from app.hub import Hub, hub_client
from app.keys import dashboards_key
from app.loads import LoadRunner
from app.sse import Live
from scripts.toolkit import ROOT, poll

Step = Callable[[], Coroutine[Any, Any, None]]


@dataclass
class Units:
    reset: Step
    unit: Step
    invariant: Callable[[], Awaitable[list[str]]]
    finish: Step | None = None  # after the last trial: close what the trials left open for the next one
    limit: int = 200  # suspension points explored at the most

    async def explore(self, *, depth: int = 1) -> list[cancelmap.Trial]:
        try:
            return await cancelmap.explore(
                self.unit, reset=self.reset, invariant=self.invariant, depth=depth, limit=self.limit
            )
        finally:
            if self.finish is not None:
                await self.finish()


def hub_close(redis_url: str, *, connected: bool = True) -> Units:
    """``Hub.close`` on a fresh hub, connected (or stuck on a server that never answers)."""
    hubs: list[Hub] = []

    async def reset() -> None:
        hub = Hub(hub_client(redis_url, name="explore-hub"), control_channel="explore:hub")
        await hub.start(wait=2.0 if connected else 0.05)
        hubs.append(hub)

    async def unit() -> None:
        await hubs[-1].close()

    async def invariant() -> list[str]:
        hub = hubs[-1]
        if hub._task is not None:
            await asyncio.wait({hub._task}, timeout=5)
        await hub.redis.aclose()
        return [] if hub._task is None or hub._task.done() else ["hub listener still running"]

    return Units(reset, unit, invariant)


def publisher_close() -> Units:
    """The dashboard publisher's clean-up (the end of ``publisher_ctx``)."""
    app = web.Application()
    app[dashboards_key] = Live()
    gens: list[AsyncIterator[None]] = []
    publishers: list[asyncio.Task[Any]] = []

    async def reset() -> None:
        before = asyncio.all_tasks()
        gen = publisher_ctx(app)
        await anext(gen)
        gens.append(gen)
        publishers.extend(t for t in asyncio.all_tasks() - before if t.get_name() == "dashboard-publisher")

    async def unit() -> None:
        await anext(gens[-1], None)

    async def invariant() -> list[str]:
        mine = publishers[-1]
        await asyncio.wait({mine}, timeout=5)
        return [] if mine.done() else ["dashboard-publisher still running"]

    return Units(reset, unit, invariant)


def loads_close() -> Units:
    """``LoadRunner.close`` with a load child running."""
    runners: list[LoadRunner] = []

    async def reset() -> None:
        runner = LoadRunner(ROOT)
        runner.launch("sleeper", None, ["-c", "import time; print('started', flush=True); time.sleep(60)"])
        async with asyncio.timeout(10):
            while not runner.output:  # noqa: ASYNC110 (the child is up and talking; bounded)
                await asyncio.sleep(0.01)
        runners.append(runner)

    async def unit() -> None:
        await runners[-1].close()

    async def invariant() -> list[str]:
        runner = runners[-1]
        assert runner.task is not None
        await asyncio.wait({runner.task}, timeout=5)
        problems = [] if runner.task.done() else ["load task still running"]
        if runner.proc is not None and runner.proc.returncode is None:
            problems.append("load process still alive")
            runner.proc.kill()
            await runner.proc.wait()
        return problems

    return Units(reset, unit, invariant)


def hub_start(redis_url: str) -> Units:
    """``Hub.start``: a start that is cancelled (SIGINT while the app starts) leaves nothing running; one that
    finishes leaves a listener that ``close`` stops."""
    hubs: list[Hub] = []
    cancelled: list[bool] = []

    async def finish() -> None:
        if hubs:  # what the owner does with a started hub (or an abandoned one); closing twice is harmless
            await hubs[-1].close()
            await hubs[-1].redis.aclose()

    async def reset() -> None:
        await finish()
        hubs.append(Hub(hub_client(redis_url, name="explore-hub"), control_channel="explore:hub"))

    async def unit() -> None:
        try:
            await hubs[-1].start(wait=2.0)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        cancelled.append(False)

    async def invariant() -> list[str]:
        hub, problems = hubs[-1], []
        if cancelled and cancelled[-1] and hub._task is not None and not hub._task.done():
            problems.append("a cancelled start left the hub's listener running")
        await finish()
        return problems

    return Units(reset, unit, invariant, finish)


def hub_subscribe(redis_url: str) -> Units:
    """``Hub.subscribe``: a stream's subscription, one message through it, and its end. However it is
    cancelled, the hub forgets the stream and Redis no longer sends the hub that channel."""
    hubs: list[Hub] = []
    channel = "explore:subscribe"
    redis = Redis.from_url(redis_url)  # to ask Redis who listens (the hub's client has one connection)

    async def finish() -> None:
        if hubs:
            await hubs[-1].close()
            await hubs[-1].redis.aclose()

    async def reset() -> None:
        await finish()
        hub = Hub(hub_client(redis_url, name="explore-hub"), control_channel="explore:hub")
        await hub.start(wait=2.0)
        hubs.append(hub)

    async def unit() -> None:
        hub = hubs[-1]
        async with hub.subscribe(channel) as inbox:
            inbox.put(sse.Event("message", "hello"))  # what the listener does with a message from Redis
            async for _ in inbox.events(heartbeat=5):
                break

    async def invariant() -> list[str]:
        hub, problems = hubs[-1], []
        if hub.subscribers or channel in hub._inboxes:
            problems.append("the hub still counts the stream")

        async def listeners() -> int:
            [(_, n)] = await redis.pubsub_numsub(channel)
            return int(n)

        if await poll(listeners, lambda n: n == 0, timeout=2, every=0.02):
            problems.append(f"Redis still sends {channel!r} to the hub")
        return problems

    async def close_all() -> None:
        await finish()
        await redis.aclose()

    return Units(reset, unit, invariant, close_all)
