"""The app factory: a root application with the operator routes, and one sub-application per variant
(``/broken``, ``/fixed``) holding that variant's own resources, each opened and closed in a ``cleanup_ctx``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence

import aiopg
from aiohttp import web
from aiohttp.typedefs import Handler

from . import cancelmap, dashboard, ops, sse, tasks
from .admission import Gate, Gates
from .errors import error_middleware
from .keys import (
    admin_db_key,
    baseline_key,
    dashboards_key,
    draining_key,
    gates_key,
    long_reads_key,
    metrics_key,
    plans_key,
    probe_key,
    scenarios_key,
    settings_key,
    streams_key,
    traffic_key,
    variant_key,
    variants_key,
)
from .metrics import Metrics, Traffic, make_middleware
from .probe import Probe
from .scenario import Context, Scenario
from .scenarios import SCENARIOS, scenario_of
from .settings import VARIANTS, Settings, Variant

MAX_BODY = 1024**2


def create_app(settings: Settings, scenarios: Sequence[Scenario] = SCENARIOS) -> web.Application:
    """The service, serving ``scenarios`` (the registry's unless told otherwise: a test adds its own)."""
    traffic = Traffic(scenario_of(scenarios))
    plans: list[cancelmap.Plan] = []
    middlewares = [make_middleware(traffic), error_middleware]
    if settings.explore:
        middlewares.insert(0, cancelmap.explore_middleware(plans))
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY)
    app[plans_key] = plans
    app[scenarios_key] = tuple(scenarios)
    app[baseline_key] = {}
    app[settings_key] = settings
    app[draining_key] = asyncio.Event()
    app[traffic_key] = traffic
    app[metrics_key] = Metrics(traffic)
    app[probe_key] = probe = Probe()
    app.cleanup_ctx.append(tasks.guarded(admin_db_ctx))  # root clean-ups run first: never let one raise
    app.cleanup_ctx.append(tasks.guarded(ops.health_ctx))
    app.add_routes(ops.ROUTES)
    dashboard.setup(app)
    variants: dict[str, web.Application] = {}
    for variant in VARIANTS:
        variants[variant] = variant_app(settings, variant, probe, scenarios)
        app.add_subapp(f"/{variant}", variants[variant])
    app[variants_key] = variants
    # After the variants' own on_shutdown (which tell their subscribers ``bye``): cut what has not ended.
    app.on_shutdown.append(end_streams)
    return app


async def end_streams(app: web.Application) -> None:
    """SIGTERM must not wait for clients: every stream and long read (report, export) still open one second
    after ``bye`` is cut, which cancels its handler as a hang-up does (see README, Guarantees)."""
    subs = app[variants_key].values()
    await sse.end_all([app[dashboards_key], *(sub[key] for sub in subs for key in (streams_key, long_reads_key))])


def variant_app(
    settings: Settings, variant: Variant, probe: Probe, scenarios: Sequence[Scenario]
) -> web.Application:
    app = web.Application(middlewares=[count_cancelled], client_max_size=MAX_BODY)
    app[settings_key] = settings
    app[probe_key] = probe  # the root's, shared: jobs that outlive their request only know this app
    app[variant_key] = variant
    app[streams_key] = sse.Live()
    app[long_reads_key] = sse.Live()
    app[gates_key] = Gates(
        orders=Gate("order writes", settings.orders_in_flight, queue=settings.orders_queued),
        # never more transfers than the scheduler can hold: spawn() then never waits after accepting
        transfers=Gate("transfers", settings.jobs_limit + settings.jobs_pending_limit),
        exports=Gate("exports", settings.exports_in_flight),
        reports=Gate("reports", settings.reports_in_flight),
    )
    app.cleanup_ctx.extend(contexts(scenarios, variant))
    for scenario in scenarios:
        app.add_routes(web.route(r.method, r.path, r.handler(variant)) for r in scenario.routes)
        if variant == "broken":  # a ladder's middle steps: not fixed yet
            app.add_routes(web.route(r.method, r.path, r.handler) for r in scenario.rungs)
        if scenario.setup is not None:
            scenario.setup(app, variant)
    return app


def contexts(scenarios: Iterable[Scenario], variant: Variant) -> list[Context]:
    """Every context the scenarios ask for, once each, in an order that keeps each scenario's own order."""
    merged: list[Context] = []
    for scenario in scenarios:
        for ctx in scenario.contexts(variant):
            if ctx not in merged:
                merged.append(ctx)
        positions = [merged.index(ctx) for ctx in scenario.contexts(variant)]
        if positions != sorted(positions):
            raise ValueError(f"scenario {scenario.name!r}: its contexts' order conflicts with another scenario's")
    return merged


async def admin_db_ctx(app: web.Application) -> AsyncIterator[None]:
    """A small pool as the configured (owner) user: stats, state and reset read through it, not through the
    variants' pools, so the figures stay readable while the broken variant is refused."""
    async with aiopg.create_pool(app[settings_key].database_url, minsize=0, maxsize=3) as pool:
        app[admin_db_key] = pool
        yield


@web.middleware
async def count_cancelled(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Counts the variant's handlers cancelled by a client hang-up (``/api/state``: ``handlers_cancelled``)."""
    try:
        return await handler(request)
    except asyncio.CancelledError:
        request.app[probe_key].hit(f"{request.app[variant_key]}.cancelled")
        raise
