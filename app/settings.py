"""Configuration: one frozen dataclass read from the environment (defaults in shared/CONTRACT.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args
from urllib.parse import urlsplit, urlunsplit

Variant = Literal["broken", "fixed"]
VARIANTS: tuple[Variant, ...] = get_args(Variant)  # the order of the columns everywhere


@dataclass(frozen=True, kw_only=True)
class Settings:
    database_url: str = "postgresql://postgres@127.0.0.1:5432/pitfalls"
    redis_url: str = "redis://127.0.0.1:6379/0"
    host: str = "127.0.0.1"
    port: int = 8080
    pg_pool_size: int = 10
    broken_redis_max_connections: int | None = 20  # None: redis-py's own default (100 since 8.0)
    fixed_redis_max_connections: int = 20
    # Token that lets a non-loopback client call /api/reset; unset means loopback only.
    api_token: str | None = None
    # Addresses or networks of the reverse proxy in front: from them only, X-Forwarded-For names the client.
    trusted_proxies: tuple[str, ...] = ()
    shutdown_timeout: float = 10.0
    # How long to wait for a variant pool's connection before TimeoutError (not a bound on a statement: app.db).
    pg_timeout: float = 60.0
    # aiojobs: transfers running at once per variant (fewer than the pool has connections, so they never wait
    # for one while holding a place), and queued beyond that. More than both together: 503 before accepting.
    jobs_limit: int = 8
    jobs_pending_limit: int = 1000
    # Fixed: how often transfers left accepted (a crash, a lost reply) are looked for and completed.
    transfer_sweep_interval: float = 30.0
    # Fixed variant: shielded order writes, exports and reports in flight at once (503 + Retry-After beyond),
    # counting those whose client already left; orders beyond it wait for a place, this many at most.
    orders_in_flight: int = 50
    orders_queued: int = 1000
    exports_in_flight: int = 20
    reports_in_flight: int = 20
    # Event streams: a comment every sse_heartbeat quiet seconds; a slow subscriber's inbox holds this many.
    sse_heartbeat: float = 15.0
    # A send to a client that has not taken it within this many seconds cuts the stream (it stopped reading).
    sse_send_timeout: float = 10.0
    sse_queue_size: int = 100
    # Open event streams allowed per variant in this process, and per client address (503 beyond).
    max_subscribers: int = 10_000
    max_subscribers_per_client: int = 5_000
    # SIGTERM behind a proxy: keep serving this many seconds while /healthz says 503 ``draining``, so the
    # proxy's health check takes the process out before its socket closes (compose sets 3; `make topology`
    # measures why). 0: stop at once, as aiohttp does.
    drain_seconds: float = 0.0
    # Performance options (bench/RESULTS.md, "What was tried"): uvloop's event loop instead of asyncio's (the
    # ``speed`` extra installs it), and SO_REUSEPORT so several processes can serve one port.
    uvloop: bool = False
    reuse_port: bool = False
    # The listen backlog (aiohttp's default): also how many new connections the loop takes per turn. Refused
    # clients reconnect (a 503 closes its connection), so under a storm of them a smaller one leaves more of
    # each turn to the admitted work (bench/RESULTS.md, 2c), at the price of SYN retries for a burst of connects.
    listen_backlog: int = 128
    # aiohttp's line per request: off by default (it costs ~4% under load and floods the terminal).
    access_log: bool = False
    # Conference mode (DEMO=1): aiomonitor on 127.0.0.1, terminal UI on monitor_port, web UI on +1.
    demo: bool = False
    # The cancellation map (scripts.explore, tests): an outermost middleware that drives every request's
    # handling and cancels it at a chosen await (app/cancelmap.py). Never from the environment.
    explore: bool = False
    monitor_port: int = 20101

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ, **overrides: object) -> Settings:
        values: dict[str, object] = {}
        if "DATABASE_URL" in env:
            values["database_url"] = env["DATABASE_URL"]
        if "REDIS_URL" in env:
            values["redis_url"] = env["REDIS_URL"]
        if "APP_HOST" in env:
            values["host"] = env["APP_HOST"]
        if "APP_PORT" in env:
            values["port"] = int(env["APP_PORT"])
        if "PG_POOL_SIZE" in env:
            values["pg_pool_size"] = int(env["PG_POOL_SIZE"])
        if "PG_TIMEOUT" in env:
            values["pg_timeout"] = float(env["PG_TIMEOUT"])
        if "BROKEN_REDIS_MAX_CONNECTIONS" in env:
            raw = env["BROKEN_REDIS_MAX_CONNECTIONS"]
            values["broken_redis_max_connections"] = None if raw == "default" else int(raw)
        if "SHUTDOWN_TIMEOUT" in env:
            values["shutdown_timeout"] = float(env["SHUTDOWN_TIMEOUT"])
        if "DRAIN_SECONDS" in env:
            values["drain_seconds"] = float(env["DRAIN_SECONDS"])
        if "SSE_HEARTBEAT" in env:
            values["sse_heartbeat"] = float(env["SSE_HEARTBEAT"])
        if "TRANSFER_SWEEP_INTERVAL" in env:
            values["transfer_sweep_interval"] = float(env["TRANSFER_SWEEP_INTERVAL"])
        if "SSE_SEND_TIMEOUT" in env:
            values["sse_send_timeout"] = float(env["SSE_SEND_TIMEOUT"])
        if env.get("UVLOOP", "") not in ("", "0"):
            values["uvloop"] = True
        if env.get("REUSE_PORT", "") not in ("", "0"):
            values["reuse_port"] = True
        if "ORDERS_QUEUED" in env:
            values["orders_queued"] = int(env["ORDERS_QUEUED"])
        if "LISTEN_BACKLOG" in env:
            values["listen_backlog"] = int(env["LISTEN_BACKLOG"])
        if env.get("ACCESS_LOG", "") not in ("", "0"):
            values["access_log"] = True
        if env.get("DEMO", "") not in ("", "0"):
            values["demo"] = True
        if "MONITOR_PORT" in env:
            values["monitor_port"] = int(env["MONITOR_PORT"])
        if env.get("TRUSTED_PROXIES"):
            values["trusted_proxies"] = tuple(p.strip() for p in env["TRUSTED_PROXIES"].split(",") if p.strip())
        if env.get("API_TOKEN"):
            values["api_token"] = env["API_TOKEN"]
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    @property
    def namespace(self) -> str:
        """Prefix of everything this instance names in shared services (Redis channels): the database name,
        so a test run and a demo on the same Redis never hear each other."""
        return database_name(self.database_url)

    def role(self, variant: Variant) -> str:
        """Each variant talks to Postgres as its own role, created by the migrations with a CONNECTION LIMIT
        and named after the database, so the broken variant can exhaust its own share of the server only."""
        return f"{self.namespace}_{variant}"

    def variant_dsn(self, variant: Variant) -> str:
        """DATABASE_URL with the user swapped for the variant's own role (trust or peer auth assumed)."""
        return with_user(self.database_url, self.role(variant))


def with_user(url: str, user: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/") or "postgres"


def mask(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))
