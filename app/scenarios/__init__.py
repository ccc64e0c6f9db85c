"""The registry: every scenario the app serves, in the order the dashboard shows them. Each module holds its
broken and fixed handlers side by side and ends with ``SCENARIO = Scenario(...)`` (see ``app/scenario.py``);
adding one is a module and a line here. Everything else (routes, /metrics, OpenAPI, the dashboard's cards,
``scripts.load``, ``scripts.watch``, the cancellation map) reads this list."""

from __future__ import annotations

from ..scenario import Scenario
from . import cancellation, disconnect, pubsub, shield

SCENARIOS: tuple[Scenario, ...] = (disconnect.SCENARIO, pubsub.SCENARIO, shield.SCENARIO, cancellation.SCENARIO)
BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}

# What POST /api/reset (and each test) runs to empty the scenarios' tables.
RESET_SQL = "; ".join(scenario.reset_sql for scenario in SCENARIOS if scenario.reset_sql)

# /metrics's ``scenario`` label of a route, from the first segment of its path (/{variant}/orders/...).
SCENARIO_OF = {resource: scenario.name for scenario in SCENARIOS for resource in scenario.resources}

# The cancellation map's targets (scripts.explore): each scenario's handlers, then the app's own plumbing.
PLUMBING_TARGETS = ("hub-close", "publisher-close", "loads-close")
MAP_TARGETS = (*(target for scenario in SCENARIOS for target in scenario.targets), *PLUMBING_TARGETS)
