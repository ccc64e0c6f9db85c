"""Every application key of the service, precisely typed, in one place."""

from __future__ import annotations

import asyncio
import uuid

import aiopg
from aiohttp import web

from .admission import Gates
from .cancelmap import Plan
from .db import Health, VariantDb, VariantRedis
from .hub import Hub
from .loads import LoadRunner
from .metrics import Metrics, Traffic
from .probe import Probe
from .scenario import Scenario
from .settings import Settings, Variant
from .sse import Live
from .state import VariantState

# On the root application.
settings_key = web.AppKey("settings", Settings)
probe_key = web.AppKey("probe", Probe)
admin_db_key = web.AppKey("admin_db", aiopg.Pool)
health_key = web.AppKey("health", Health)  # /healthz's own connections
draining_key = web.AppKey("draining", asyncio.Event)  # SIGTERM with DRAIN_SECONDS (ops.drain_on_signals)
variants_key = web.AppKey("variants", dict[str, web.Application])
baseline_key = web.AppKey("baseline", dict[str, VariantState])  # each variant's state at the last reset
scenarios_key = web.AppKey("scenarios", tuple[Scenario, ...])  # what this app serves (the registry's, by default)
plans_key = web.AppKey("explore_plans", list[Plan])  # Settings.explore: what to do with the next requests
traffic_key = web.AppKey("traffic", Traffic)
metrics_key = web.AppKey("metrics", Metrics)
dashboards_key = web.AppKey("dashboards", Live)  # open dashboard streams
loads_key = web.AppKey("loads", LoadRunner)
explorer_key = web.AppKey("explorer", LoadRunner)  # the cancellation map run from the dashboard

# On each variant's sub-application (/broken, /fixed): its own resources, so one cannot starve the other.
variant_key: web.AppKey[Variant] = web.AppKey("variant")
db_key = web.AppKey("db", VariantDb)
redis_key = web.AppKey("redis", VariantRedis)
streams_key = web.AppKey("streams", Live)  # live event streams
long_reads_key = web.AppKey("long_reads", Live)  # reports and exports: cut at shutdown
gates_key = web.AppKey("gates", Gates)  # admission bounds of the fixed handlers
in_hand_key = web.AppKey("transfers_in_hand", set[uuid.UUID])  # fixed: transfers its scheduler holds
sweep_key = web.AppKey("transfer_sweep", asyncio.Task[None])  # fixed: completes transfers left accepted
hub_key = web.AppKey("hub", Hub)  # fixed variant only: the process's one Redis subscription

__all__ = [
    "Variant",
    "admin_db_key",
    "baseline_key",
    "dashboards_key",
    "db_key",
    "explorer_key",
    "gates_key",
    "health_key",
    "hub_key",
    "in_hand_key",
    "loads_key",
    "long_reads_key",
    "metrics_key",
    "plans_key",
    "probe_key",
    "redis_key",
    "scenarios_key",
    "settings_key",
    "streams_key",
    "sweep_key",
    "traffic_key",
    "variant_key",
    "variants_key",
]
