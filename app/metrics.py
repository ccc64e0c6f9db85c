"""Traffic counters per variant and scenario, and ``GET /metrics`` in the Prometheus text format."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .settings import VARIANTS
from .state import Snapshot


class Traffic:
    """Requests by (variant, scenario, outcome) and handlers in flight, counted by ``traffic_middleware``."""

    def __init__(self, scenario_of: Mapping[str, str]) -> None:
        self.scenario_of = scenario_of  # first segment of a variant route's path -> its scenario
        self.requests: Counter[tuple[str, str, str]] = Counter()
        self.in_flight: Counter[tuple[str, str]] = Counter()

    def requests_of(self, variant: str) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for (v, scenario, outcome), n in self.requests.items():
            if v == variant:
                out.setdefault(scenario, {})[outcome] = n
        return out

    def in_flight_of(self, variant: str) -> int:
        return sum(n for (v, _), n in self.in_flight.items() if v == variant)

    def labels_of(self, request: web.Request) -> tuple[str, str] | None:
        """(variant, scenario) of a scenario route, from its path: /{variant}/{resource}/..."""
        parts = request.path.split("/")
        if len(parts) >= 3 and parts[1] in VARIANTS and parts[2] in self.scenario_of:
            return parts[1], self.scenario_of[parts[2]]
        return None


def make_middleware(traffic: Traffic) -> Any:
    @web.middleware
    async def traffic_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        labels = traffic.labels_of(request)
        if labels is None:
            return await handler(request)
        traffic.in_flight[labels] += 1
        outcome = "5xx"
        try:
            response = await handler(request)
            outcome = f"{response.status // 100}xx"
            return response
        except web.HTTPException as exc:
            outcome = f"{exc.status // 100}xx"
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            traffic.in_flight[labels] -= 1
            traffic.requests[(*labels, outcome)] += 1

    return traffic_middleware


class _Snapshot(Collector):
    """Families read off one ``ops.snapshot`` and the traffic counters, at scrape time."""

    def __init__(self, traffic: Traffic) -> None:
        self.traffic = traffic
        self.snap: Snapshot = {"variants": {}, "cards": {}, "pid": 0}

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "pitfalls_requests",
            "Requests by variant, scenario and outcome",
            labels=["variant", "scenario", "outcome"],
        )
        for (variant, scenario, outcome), n in sorted(self.traffic.requests.items()):
            requests.add_metric([variant, scenario, outcome], n)
        yield requests
        in_flight = GaugeMetricFamily(
            "pitfalls_handlers_in_flight", "Handlers running", labels=["variant", "scenario"]
        )
        for (variant, scenario), n in sorted(self.traffic.in_flight.items()):
            in_flight.add_metric([variant, scenario], n)
        yield in_flight
        cancelled = CounterMetricFamily("pitfalls_handlers_cancelled", "Handlers cancelled", labels=["variant"])
        protected = CounterMetricFamily(
            "pitfalls_protected_errors", "Failures of shielded or spawned work (logged too)", labels=["variant"]
        )
        gauges = {
            name: GaugeMetricFamily(f"pitfalls_{name}", doc, labels=["variant"]) for name, doc in GAUGES.items()
        }
        for variant, s in self.snap["variants"].items():
            cancelled.add_metric([variant], s["handlers_cancelled"])
            protected.add_metric([variant], s["protected_errors"])
            values = {
                "pg_pool_size": s["postgres"]["pool_size"],
                "pg_pool_free": s["postgres"]["pool_free"],
                "pg_backends": s["postgres"]["backends"],
                "redis_connections_in_use": s["redis"]["connections_in_use"],
                "sse_subscribers": s["subscribers"],
                "jobs_active": s["jobs"]["active"],
                "jobs_pending": s["jobs"]["pending"],
                "orders_without_items": s["invariants"]["orders_without_items"],
                "transfers_lost": s["invariants"]["transfers_lost"],
                "messages_dropped": s["invariants"]["messages_dropped"],
            }
            for name, value in values.items():
                if value is not None:
                    gauges[name].add_metric([variant], value)
        yield cancelled
        yield protected
        yield from gauges.values()


GAUGES = {
    "pg_pool_size": "Connections in the variant's aiopg pool",
    "pg_pool_free": "Free connections in the variant's aiopg pool",
    "pg_backends": "Postgres backends of the variant's role in this database",
    "redis_connections_in_use": "Redis connections checked out (pool and hub)",
    "sse_subscribers": "Open event streams",
    "jobs_active": "aiojobs jobs running",
    "jobs_pending": "aiojobs jobs queued",
    "orders_without_items": "Invariant: orders written without their items (must be 0)",
    "transfers_lost": "Invariant: transfers accepted and not committed (in-flight included)",
    "messages_dropped": "Messages dropped from slow subscribers' inboxes",
}


class Metrics:
    def __init__(self, traffic: Traffic) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = _Snapshot(traffic)
        self.registry.register(self.collector)

    def render(self, snap: Snapshot) -> bytes:
        self.collector.snap = snap  # set and rendered in one synchronous step: no scrape sees another's
        return generate_latest(self.registry)
