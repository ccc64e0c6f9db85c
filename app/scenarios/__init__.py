"""The registry: every scenario the app serves, in the order the dashboard shows them. Each module holds its
broken and fixed handlers side by side and ends with ``SCENARIO = Scenario(...)`` (see ``app/scenario.py``);
adding one is a module and a line here. Everything else (routes, /metrics, OpenAPI, the dashboard's cards,
``scripts.load``, ``scripts.watch``, the cancellation map) reads this list."""

from __future__ import annotations

from collections.abc import Iterable

from ..scenario import Scenario
from . import cancellation, disconnect, pubsub, shield

SCENARIOS: tuple[Scenario, ...] = (disconnect.SCENARIO, pubsub.SCENARIO, shield.SCENARIO, cancellation.SCENARIO)


def reset_sql(scenarios: Iterable[Scenario]) -> str:
    """What POST /api/reset (and each test) runs to empty the scenarios' tables."""
    return "; ".join(scenario.reset_sql for scenario in scenarios if scenario.reset_sql)


def scenario_of(scenarios: Iterable[Scenario]) -> dict[str, str]:
    """/metrics's ``scenario`` label of a route, from the first segment of its path (/{variant}/orders/...)."""
    return {resource: scenario.name for scenario in scenarios for resource in scenario.resources}


RESET_SQL = reset_sql(SCENARIOS)

# The cancellation map's targets (scripts.explore): each scenario's handlers, then the app's own plumbing.
PLUMBING_TARGETS = (
    *("hub-start", "hub-subscribe", "hub-close", "publisher-close", "loads-close", "transfer-sweep"),
)
MAP_TARGETS = (*(target for scenario in SCENARIOS for target in scenario.targets), *PLUMBING_TARGETS)
