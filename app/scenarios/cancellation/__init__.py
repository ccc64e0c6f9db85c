"""The cancellation gallery: the smaller asyncio traps, one module per pitfall, each with ``broken`` and
``fixed`` coroutines side by side. ``GET /{variant}/pitfalls/{name}`` runs one and answers what happened.

Every pitfall returns a dict with ``trap`` (did the trap spring?) and ``summary`` (one sentence), plus the
figures that show it. Each run is bounded: a few seconds at most.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any

from aiohttp import web

from ...errors import json_error
from ...keys import variant_key
from . import (
    blocking_call,
    gather_orphans,
    hidden_coroutine,
    self_cancel,
    slow_cleanup_timeout,
    swallowed_cancel,
    unawaited_cancel,
    wait_for_race,
)

RESET_SQL = None
PITFALLS: dict[str, ModuleType] = {
    "swallowed-cancel": swallowed_cancel,
    "wait-for-race": wait_for_race,
    "unawaited-cancel": unawaited_cancel,
    "slow-cleanup-timeout": slow_cleanup_timeout,
    "gather-orphans": gather_orphans,
    "self-cancel": self_cancel,
    "hidden-coroutine": hidden_coroutine,
    "blocking-call": blocking_call,
}

Pitfall = Callable[[web.Request], Awaitable[dict[str, Any]]]


async def run_pitfall(request: web.Request) -> web.Response:
    name, variant = request.match_info["name"], request.app[variant_key]
    module = PITFALLS.get(name)
    if module is None:
        return json_error(404, f"no pitfall {name!r}; there are: {', '.join(PITFALLS)}")
    pitfall: Pitfall = getattr(module, variant)
    result = await pitfall(request)
    python = ".".join(map(str, sys.version_info[:3]))
    return web.json_response({"pitfall": name, "variant": variant, "python": python, **result})


async def list_pitfalls(request: web.Request) -> web.Response:
    return web.json_response(
        {name: (module.__doc__ or "").strip().splitlines()[0] for name, module in PITFALLS.items()}
    )


def setup(app: web.Application, variant: str) -> None:
    app.add_routes([web.get("/pitfalls", list_pitfalls), web.get("/pitfalls/{name}", run_pitfall)])
