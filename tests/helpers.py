"""Test helpers: real HTTP connections a test can hang up, the app as a checked process, and what the client
toolkit (``scripts/toolkit.py``: polling with a deadline, never a bare sleep; SQL; ports) gives the scripts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.error
import urllib.request
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from app.state import VariantState
from scripts.toolkit import ROOT, AppProcess, free_port, poll, sql

__all__ = [
    "ROOT",
    "TRANSFER",
    "App",
    "Callers",
    "free_port",
    "get",
    "get_json",
    "poll",
    "sql",
    "transfer_stats",
    "variant_state",
]
TRANSFER = {"from": "alice", "to": "bob", "amount": 7}  # a valid transfer body
BAD_LOG_LINES = ("Task was destroyed but it is pending", "never retrieved", "Traceback")


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


async def get_json(client: TestClient, path: str) -> Any:
    resp = await client.get(path)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def variant_state(client: TestClient, variant: str) -> VariantState:
    state: VariantState = (await get_json(client, "/api/state"))["variants"][variant]
    return state


async def transfer_stats(client: TestClient, variant: str) -> dict[str, Any]:
    stats: dict[str, Any] = await get_json(client, f"/{variant}/transfers/stats")
    return stats


def get(url: str) -> tuple[int, Any]:
    """GET ``url`` from outside (a spawned app): the status and the JSON body, errors included."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


class App(AppProcess):
    """An app spawned by a test (the ``spawn_app`` fixture): it must stop cleanly — no "Task was destroyed",
    "never retrieved" or traceback in its log — unless spawned with ``clean_log=False``."""

    clean_log: bool = True

    def check_log(self) -> None:
        assert self.log is not None
        text = self.log.read_text()
        for bad in BAD_LOG_LINES if self.clean_log else ():
            assert bad not in text, text[-3000:]
