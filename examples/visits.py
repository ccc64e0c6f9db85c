"""Scenario ``visits`` (the README's "Add your own pitfall"): a read-modify-write across an await.

Symptom: 50 concurrent visits count fewer than 50.
Cause: the handler reads the count, awaits (a cache, a database), then writes count + 1: every visit that read
before another one wrote overwrites that one's update.
Fix: await first, then read and write in one synchronous step (no ``await`` between them).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from app import openapi, validation
from app.scenario import Route, Scenario, shared

counter_key = web.AppKey("visits", dict[str, int])


async def counter(app: web.Application) -> AsyncIterator[None]:
    app[counter_key] = {"visits": 0}
    yield


async def broken_visit(request: web.Request) -> web.Response:
    """Reads, awaits, writes: a visit counted by another handler during the await is overwritten."""
    count, hold = request.app[counter_key], validation.query_seconds(request, "hold", default=0.01, hi=5)
    seen = count["visits"]
    await asyncio.sleep(hold)  # a lookup, a cache call...
    count["visits"] = seen + 1
    return web.json_response(count)


async def fixed_visit(request: web.Request) -> web.Response:
    """Awaits first, then reads and writes in one step: no other handler runs in between."""
    count, hold = request.app[counter_key], validation.query_seconds(request, "hold", default=0.01, hi=5)
    await asyncio.sleep(hold)
    count["visits"] += 1
    return web.json_response(count)


async def visits(request: web.Request) -> web.Response:
    return web.json_response(request.app[counter_key])


SCENARIO = Scenario(
    name="visits",
    title="Lost updates across an await",
    module=__name__,
    routes=(
        Route(
            "POST",
            "/visits",
            broken_visit,
            fixed_visit,
            openapi.operation("counted", params=[openapi.seconds("hold", 5, 0.01)]),
        ),
        shared("GET", "/visits", visits, openapi.operation("the count")),
    ),
    contexts=lambda variant: (counter,),
)
