"""Test helpers: real HTTP connections a test can hang up, and polling with a deadline (never a bare sleep)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
from aiohttp.test_utils import TestClient

T = TypeVar("T")


class Callers:
    """Requests on connections of their own, so cancelling one really closes its socket mid-request."""

    def __init__(self, client: TestClient) -> None:
        self.base = str(client.make_url("")).rstrip("/")
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True))
        self.tasks: list[asyncio.Task[Any]] = []

    async def __aenter__(self) -> Callers:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.hang_up()
        await self.session.close()

    def start(self, method: str, path: str, **kwargs: Any) -> asyncio.Task[Any]:
        async def call() -> tuple[int, Any]:
            async with self.session.request(method, self.base + path, **kwargs) as resp:
                return resp.status, await resp.json()

        task = asyncio.create_task(call())
        self.tasks.append(task)
        return task

    async def hang_up(self) -> None:
        """Close every connection still waiting for its answer."""
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks.clear()


async def poll(
    read: Callable[[], Awaitable[T]], until: Callable[[T], bool], *, timeout: float = 10.0, every: float = 0.05
) -> T:
    """Read until ``until(value)`` holds or ``timeout`` passes; returns the last value read either way."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await read()
        if until(value) or loop.time() >= deadline:
            return value
        await asyncio.sleep(every)


async def get_json(client: TestClient, path: str) -> Any:
    resp = await client.get(path)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def variant_state(client: TestClient, variant: str) -> dict[str, Any]:
    state: dict[str, Any] = (await get_json(client, "/api/state"))["variants"][variant]
    return state
