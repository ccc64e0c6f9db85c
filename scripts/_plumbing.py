"""The app's own plumbing as units for the cancellation map: each a ``reset`` that builds a fresh, running
piece, a ``unit`` that closes it (the step a cancel can land in), and an ``invariant`` for afterwards.
Used by ``python -m scripts.explore`` and by the tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from app import cancelmap
from app.dashboard import publisher_ctx
from app.hub import Hub, hub_client
from app.keys import dashboards_key
from app.loads import LoadRunner
from app.sse import Live
from scripts.toolkit import ROOT

Step = Callable[[], Coroutine[Any, Any, None]]


@dataclass
class Units:
    reset: Step
    unit: Step
    invariant: Callable[[], Awaitable[list[str]]]

    async def explore(self, *, depth: int = 1) -> list[cancelmap.Trial]:
        return await cancelmap.explore(self.unit, reset=self.reset, invariant=self.invariant, depth=depth)


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
