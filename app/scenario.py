"""What a scenario is: the one description from which the app mounts its routes and resources, and from which
``/metrics``, the OpenAPI document, the dashboard's cards, ``scripts.watch``, ``scripts.load`` and the
cancellation map take their lists. A scenario module ends with ``SCENARIO = Scenario(...)``; the registry is
``app/scenarios/__init__.py``.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from .settings import Variant
from .state import VariantState

Context = Callable[[web.Application], AsyncIterator[None]]
ROOT = Path(__file__).resolve().parent.parent


def source_of(module_name: str) -> str:
    """The module's file, relative to the project root (what the README and the dashboard link)."""
    return Path(sys.modules[module_name].__file__ or "").relative_to(ROOT).as_posix()


@dataclass(frozen=True)
class Route:
    """One route of both variants: the same path, each variant's handler, and its OpenAPI operation (the
    ``{variant}`` path parameter is added for it)."""

    method: str
    path: str
    broken: Handler
    fixed: Handler
    spec: dict[str, Any]

    def handler(self, variant: Variant) -> Handler:
        return self.broken if variant == "broken" else self.fixed


def shared(method: str, path: str, handler: Handler, spec: dict[str, Any]) -> Route:
    """A route whose handler is the same in both variants (stats, publish): not part of the lesson."""
    return Route(method, path, handler, handler, spec)


@dataclass(frozen=True)
class Rung:
    """A step between broken and fixed, where one pair would hide two lessons (a ladder): served beside the
    broken variant's handler at ``path``, on the broken variant's pool and role, and driven by the same load
    (``scripts.ladder``) so the three steps' figures sit side by side."""

    name: str
    title: str  # what this step does, in a few words ("a transaction, no shield")
    lesson: str  # what it shows, in one sentence
    method: str
    path: str
    handler: Handler
    spec: dict[str, Any]


@dataclass(frozen=True)
class Figure:
    label: str
    read: Callable[[VariantState], object]


def show(value: object) -> str:
    """A figure as the page shows it: ``?`` when it could not be read (Postgres away, say)."""
    return "?" if value is None else str(value)


def of(part: object, whole: object) -> str:
    """``part / whole``: in use of the maximum, backends of the limit."""
    return f"{show(part)} / {show(whole)}"


@dataclass(frozen=True)
class Card:
    """How the dashboard and ``scripts.watch`` show the scenario: the headline count of failures (0 = held),
    the figures beneath it and the sparkline's value."""

    failures: Callable[[VariantState], int]
    failures_label: str
    figures: tuple[Figure, ...]
    spark: Callable[[VariantState], float]
    spark_label: str


@dataclass(frozen=True)
class Load:
    """``scripts.load <name>`` exists for the scenario (module ``scripts/load_<name>.py``)."""

    requests: int  # default number of requests (subscribers, for pubsub)
    dashboard_args: tuple[str, ...] = ()  # extra arguments when the dashboard starts it


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    module: str  # the scenario's module (``__name__``): the one file that holds its lesson
    routes: tuple[Route, ...]
    # The cleanup contexts each variant needs, in order: they open in this order and close in reverse, so a
    # context listed after another is still open while the later one closes (see shield).
    contexts: Callable[[Variant], tuple[Context, ...]] = lambda variant: ()
    setup: Callable[[web.Application, Variant], None] | None = None  # start-up/shutdown hooks beyond contexts
    reset_sql: str | None = None  # what POST /api/reset runs for it
    card: Card | None = None
    load: Load | None = None
    targets: tuple[str, ...] = ()  # its handlers in the cancellation map (scripts.explore)
    rungs: tuple[Rung, ...] = ()  # steps between broken and fixed, served in the broken variant
    resources: tuple[str, ...] = field(init=False)  # first path segments: /metrics's ``scenario`` label

    def __post_init__(self) -> None:
        segments = dict.fromkeys(route.path.split("/")[1] for route in self.routes)
        object.__setattr__(self, "resources", tuple(segments))

    @property
    def source(self) -> str:
        return source_of(self.module)


Work = Any  # each pitfall's broken/fixed piece of code: what ``measure`` runs
Result = dict[str, Any]


@dataclass(frozen=True)
class Pitfall:
    """One pitfall of the cancellation gallery: the broken and fixed code side by side, and ``measure``, which
    runs either under the same conditions and says whether the trap sprang (``trap``) in one sentence
    (``summary``), with the figures that show it. Its one-line description is its module's docstring."""

    name: str
    broken: Work
    fixed: Work
    measure: Callable[[Work], Awaitable[Result]]
    # Is the trap a cancel that goes wrong at an await? Then the cancellation map, cancelling ``measure`` at
    # each of its awaits, reproduces it on broken. Otherwise the map only shows that both let a cancel through.
    cancel_trap: bool = False

    async def run(self, variant: Variant) -> Result:
        return await self.measure(self.broken if variant == "broken" else self.fixed)

    @property
    def module(self) -> str:
        return str(self.measure.__module__)

    @property
    def summary(self) -> str:
        """What it shows, in one line: the first paragraph of its module's docstring, without the name."""
        first = (sys.modules[self.module].__doc__ or "").strip().split("\n\n")[0]
        return " ".join(first.split()).removeprefix(f"{self.name}: ").replace("``", "")

    @property
    def source(self) -> str:
        return source_of(self.module)


# The base URL of the server a gallery pitfall runs in (its own socket, never the request's Host header): set
# by the gallery's handler for ``blocking-call``, which measures what a concurrent client of it sees.
server_url: ContextVar[str] = ContextVar("server_url")
# The app's DATABASE_URL, for the pitfalls that need a real Postgres (pool-wait, commit-retry): each opens a
# small pool of its own for the run, so the variants' pools and role limits are not touched.
database_url: ContextVar[str] = ContextVar("database_url")
