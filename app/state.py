"""The shape of ``GET /api/state`` (and of each dashboard event): one snapshot of every variant, read by
``/metrics``, the dashboard, ``scripts.watch``, the load scripts and the tests."""

from __future__ import annotations

from typing import TypedDict


class Postgres(TypedDict):
    role: str
    pool_max: int
    pool_size: int
    pool_free: int
    pool_in_use: int
    backends: int | None  # None: Postgres could not be read (``error`` says why)
    backends_active: int | None
    role_connections: int | None
    role_connection_limit: int | None
    error: str | None


class Redis(TypedDict):
    connections_in_use: int
    max_connections: int | None


class Jobs(TypedDict):
    active: int
    pending: int


class Invariants(TypedDict):
    orders_without_items: int | None
    transfers_lost: int | None
    messages_dropped: int


class VariantState(TypedDict):
    postgres: Postgres
    redis: Redis
    subscribers: int
    jobs: Jobs
    handlers_cancelled: int
    protected_errors: int
    in_flight: int
    requests: dict[str, dict[str, int]]  # scenario -> outcome ("2xx", "5xx", "cancelled", ...) -> count
    invariants: Invariants


class CardState(TypedDict):
    """A scenario's card for one variant, as the dashboard and ``scripts.watch`` show it."""

    failures: int
    figures: list[tuple[str, str]]
    spark: float


class Snapshot(TypedDict):
    variants: dict[str, VariantState]
    cards: dict[str, dict[str, CardState]]  # scenario -> variant -> card
    pid: int
