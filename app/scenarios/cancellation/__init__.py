"""The cancellation gallery: the smaller asyncio traps, one module per pitfall, each with its broken and fixed
code side by side and ``PITFALL = Pitfall(...)`` at its end. ``GET /{variant}/pitfalls/{name}`` runs one and
answers what happened.

Every pitfall's ``measure`` returns a dict with ``trap`` (did the trap spring?) and ``summary`` (one sentence),
plus the figures that show it. Each run is bounded: a few seconds at most.
"""

from __future__ import annotations

import sys

from aiohttp import web

from ... import openapi
from ...errors import json_error
from ...keys import settings_key, variant_key
from ...scenario import Pitfall, Scenario, database_url, server_url, shared
from . import (
    blocking_call,
    cancel_then_wait,
    commit_retry,
    first_wins,
    gather_orphans,
    hidden_coroutine,
    pool_wait,
    self_cancel,
    shielded_error,
    slow_cleanup_timeout,
    swallowed_cancel,
    unawaited_cancel,
    wait_for_race,
)

PITFALLS: dict[str, Pitfall] = {
    module.PITFALL.name: module.PITFALL
    for module in (
        swallowed_cancel,
        wait_for_race,
        unawaited_cancel,
        cancel_then_wait,
        slow_cleanup_timeout,
        gather_orphans,
        first_wins,
        shielded_error,
        pool_wait,
        commit_retry,
        self_cancel,
        hidden_coroutine,
        blocking_call,
    )
}


async def run_pitfall(request: web.Request) -> web.Response:
    name, variant = request.match_info["name"], request.app[variant_key]
    pitfall = PITFALLS.get(name)
    if pitfall is None:
        return json_error(404, f"no pitfall {name!r}; there are: {', '.join(PITFALLS)}")
    server_url.set(_own_url(request))
    database_url.set(request.config_dict[settings_key].database_url)
    result = await pitfall.run(variant)
    python = ".".join(map(str, sys.version_info[:3]))
    return web.json_response({"pitfall": name, "variant": variant, "python": python, **result})


async def list_pitfalls(request: web.Request) -> web.Response:
    return web.json_response({name: pitfall.summary for name, pitfall in PITFALLS.items()})


def _own_url(request: web.Request) -> str:
    """This server's own address: the socket the request came in on (a wildcard bind means loopback)."""
    assert request.transport is not None
    host, port = request.transport.get_extra_info("sockname")[:2]
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}

SCENARIO = Scenario(
    name="cancellation",
    title="Cancellation gallery",
    module=__name__,
    routes=(
        shared("GET", "/pitfalls", list_pitfalls, openapi.operation("the gallery")),
        shared("GET", "/pitfalls/{name}", run_pitfall, openapi.operation("what happened", params=[NAME])),
    ),
    targets=tuple(PITFALLS),  # each pitfall's measure, cancelled at each of its awaits
)
