"""The cancellation map: cancel a handler (or a piece of the app's plumbing) at each of its awaits in turn.

    python -m scripts.explore <target|all> [--variant broken|fixed] [--depth 1|2] [--json PATH]

Runs the app in this process against the real Postgres and Redis (a database of its own, ``<db>_explore``),
records the target's suspension points, then for each point k runs it again from a reset with its handler's
task cancelled exactly there — what aiohttp does on a client hang-up with ``handler_cancellation=True`` — and
checks the target's invariant. Prints a table per target and ``VERDICT: reproduced`` (broken: at least one
point violates) / ``held`` (fixed: none does) / ``unexpected``; exits 0 only for the expected verdict. An
unknown target lists the targets and exits 2.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import aiojobs.aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from app import cancelmap
from app.db import fetch_all, fetch_one
from app.factory import create_app
from app.keys import (
    admin_db_key,
    db_key,
    gates_key,
    hub_key,
    plans_key,
    redis_key,
    settings_key,
    variants_key,
)
from app.migrate import migrate
from app.scenario import database_url, server_url
from app.scenarios import MAP_TARGETS, shield
from app.scenarios.cancellation import PITFALLS
from app.settings import VARIANTS, Settings, Variant, database_name, with_database
from scripts.toolkit import poll

from . import _plumbing
from ._common import EXPECTED

Check = Callable[[TestClient, Variant], Awaitable[list[str]]]
ORDER = {"customer": "explorer", "items": [{"sku": "tea", "qty": 2}, {"sku": "cup", "qty": 1}]}
TRANSFER = {"from": "alice", "to": "bob", "amount": 5}
SETTLE = 5.0


@dataclass(frozen=True)
class Target:
    """One handler to explore: the request that reaches it, and what must hold after each cancelled run."""

    name: str
    method: str
    path: str  # "{variant}" is filled in
    body: dict[str, Any] | None
    invariant: Check


def app_of(client: TestClient) -> web.Application:
    assert client.app is not None  # a TestClient on a TestServer always has one
    return client.app


async def quiet(client: TestClient, variant: Variant) -> list[str]:
    """Wait (bounded) until the variant has nothing in flight: no job, no pool connection in use."""
    return await quiet_app(app_of(client), variant)


async def quiet_app(app: web.Application, variant: Variant) -> list[str]:
    """Wait (bounded) until nothing of the variant is in flight; then no server backend of its role may be left
    inside a transaction (one a cancel interrupted and nobody rolled back would hold its locks)."""
    sub = app[variants_key][variant]
    scheduler = aiojobs.aiohttp.get_scheduler_from_app(sub)
    assert scheduler is not None

    async def settled() -> bool:
        pool = sub[db_key].pool
        return scheduler.active_count + scheduler.pending_count == 0 and pool.size == pool.freesize

    if not await poll(settled, bool, timeout=SETTLE, every=0.02):
        return ["did not settle: work still in flight"]
    sql = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND usename = %s"
        " AND state LIKE 'idle in transaction%%'"
    )
    (idle,) = await fetch_one(app[admin_db_key], sql, (app[settings_key].role(variant),))
    return [f"{idle} backend(s) left idle in a transaction"] if idle else []


async def orders_whole(client: TestClient, variant: Variant) -> list[str]:
    problems = await quiet(client, variant)
    sql = (
        "SELECT count(*) FROM orders o WHERE o.variant = %s"
        " AND NOT EXISTS (SELECT 1 FROM order_items i WHERE i.order_id = o.id)"
    )
    (half,) = await fetch_one(app_of(client)[admin_db_key], sql, (variant,))
    return problems + ([f"{half} order(s) without items"] if half else [])


async def no_backend_left(client: TestClient, variant: Variant) -> list[str]:
    """No backend of the variant's role still running the report 0.5 s after the handler ended."""
    problems = await quiet(client, variant)
    sql = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND usename = %s AND state = 'active' AND query LIKE 'SELECT pg_sleep%%'"
    )
    role = app_of(client)[settings_key].role(variant)

    async def running_reports() -> int:
        (running,) = await fetch_one(app_of(client)[admin_db_key], sql, (role,))
        return int(running)  # type: ignore[call-overload]

    running = await poll(running_reports, lambda n: n == 0, timeout=0.5, every=0.02)
    return problems + ([f"{running} report backend(s) outlive their request"] if running else [])


async def transfers_exactly_once(client: TestClient, variant: Variant) -> list[str]:
    problems = await quiet(client, variant)
    sql = (
        "SELECT count(*) FILTER (WHERE status <> 'committed'),"
        " (SELECT sum(balance) FROM accounts WHERE variant = %(v)s)::bigint FROM transfers WHERE variant = %(v)s"
    )
    left, balance = await fetch_one(app_of(client)[admin_db_key], sql, {"v": variant})
    if left:
        problems.append(f"{left} transfer(s) accepted and never committed")
    if balance != 4_000_000:
        problems.append(f"money not conserved: {balance}")
    return problems


async def export_audited(client: TestClient, variant: Variant) -> list[str]:
    problems = await quiet(client, variant)
    rows = await fetch_all(
        app_of(client)[admin_db_key], "SELECT count(*) FROM exports WHERE variant = %s", (variant,)
    )
    audits = rows[0][0]
    return problems + ([f"{audits} audit records for one export"] if audits != 1 else [])


TARGETS = {
    t.name: t
    for t in (
        Target("orders", "POST", "/{variant}/orders?hold=0.05", ORDER, orders_whole),
        Target("reports", "GET", "/{variant}/reports/slow?seconds=2", None, no_backend_left),
        Target("transfers", "POST", "/{variant}/transfers?hold=0.05", TRANSFER, transfers_exactly_once),
        Target("export", "GET", "/{variant}/export?pace=0.01", None, export_audited),
    )
}


def transfer_sweep(client: TestClient) -> _plumbing.Units:
    """The fixed variant's recovery (at start-up, then every 30 s): ``sweep_once`` hands a transfer left
    accepted to the scheduler. However it is cancelled, the next sweep completes it, exactly once."""
    sub = app_of(client)[variants_key]["fixed"]

    async def reset() -> None:
        await reset_app(client)
        await fetch_one(
            app_of(client)[admin_db_key],
            "INSERT INTO transfers (id, variant, from_account, to_account, amount, accepted_at)"
            " VALUES (gen_random_uuid(), 'fixed', 'alice', 'bob', 5, now() - interval '1 minute'); SELECT 1",
        )

    async def unit() -> None:
        await shield.sweep_once(sub, older_than=0)

    async def invariant() -> list[str]:
        problems = await quiet(client, "fixed")
        await shield.sweep_once(sub, older_than=0)  # the next sweep
        problems += await transfers_exactly_once(client, "fixed")
        ledger_sql = (
            "SELECT count(*) FROM ledger l JOIN transfers t ON t.id = l.transfer_id WHERE t.variant = 'fixed'"
        )
        (ledger,) = await fetch_one(app_of(client)[admin_db_key], ledger_sql)
        if ledger != 2:
            problems.append(f"{ledger} ledger rows for one transfer (2 expected)")
        if (gate := sub[gates_key].transfers).in_flight:
            problems.append(f"{gate.in_flight} admission place(s) never given back")
        return problems

    return _plumbing.Units(reset, unit, invariant)


def shutdown(client: TestClient, variant: Variant) -> _plumbing.Units:
    """The variant's shutdown (``on_shutdown``, then its cleanup contexts, as on SIGTERM) with three transfers
    in flight, cancelled at each of its points (a second signal, a supervisor giving up). What must hold: every
    transfer answered 202 lands exactly once — during the drain, or at the next start (its sweep) — and the
    money adds up. Broken's bare tasks are cancelled at shutdown: it loses them."""
    settings = app_of(client)[settings_key]
    servers: list[TestServer] = []
    accepted: list[int] = []
    before: list[set[asyncio.Task[Any]]] = []

    async def reset() -> None:
        before.append(asyncio.all_tasks())
        await reset_app(client)
        server = TestServer(create_app(settings))
        await server.start_server()
        servers.append(server)
        ok = 0
        async with aiohttp.ClientSession() as http:
            for _ in range(3):
                url = server.make_url(f"/{variant}/transfers?hold=0.1")
                async with http.post(url, json=TRANSFER) as resp:
                    ok += resp.status == 202
        accepted.append(ok)

    async def unit() -> None:
        await servers[-1].close()

    async def invariant() -> list[str]:
        # A close that was cancelled ends the process: what ``run_app`` does then is cancel every task left
        # and wait for them. A task that does not end then would hold the process up.
        problems = await tasks_left(before[-1], grace=0, then_cancel=True)
        await release(servers[-1].app)
        restarted = TestServer(create_app(settings))  # the next start: its sweep completes what is left
        await restarted.start_server()
        try:
            problems += await quiet_app(restarted.app, variant)
        finally:
            await restarted.close()
        problems += await transfers_exactly_once(client, variant)
        if accepted[-1] != 3:
            problems.append(f"only {accepted[-1]} of 3 transfers accepted before the shutdown")
        return problems

    return _plumbing.Units(reset, unit, invariant)


GALLERY_POINTS = 50  # wait-for-race runs 1000 races, 2000 awaits: the first 50 tell the story


def gallery(client: TestClient, name: str, variant: Variant) -> _plumbing.Units:
    """A gallery pitfall's ``measure`` run on the variant's code and cancelled at each of its awaits. What must
    hold: the cancel reaches the caller, and no task the run started is still running half a second later."""
    pitfall = PITFALLS[name]
    work = pitfall.broken if variant == "broken" else pitfall.fixed
    base = str(client.make_url("")).rstrip("/")
    before: list[set[asyncio.Task[Any]]] = []

    async def reset() -> None:
        before.append(asyncio.all_tasks())

    async def unit() -> None:
        server_url.set(base)  # blocking-call probes a server: this one
        database_url.set(client.app[settings_key].database_url)  # pool-wait and commit-retry open a pool
        await pitfall.measure(work)

    async def invariant() -> list[str]:
        return await tasks_left(before[-1], grace=0.5)

    return _plumbing.Units(reset, unit, invariant, limit=GALLERY_POINTS)


async def release(app: web.Application | None) -> None:
    """What the process's exit does after a clean-up that was cancelled midway: close the connections a skipped
    context exit left open (closing twice is harmless), so they do not outlive the trial in this process."""
    for sub in app[variants_key].values() if app is not None else ():
        if hub_key in sub:
            await sub[hub_key].close()
            await sub[hub_key].redis.aclose()
        await sub[redis_key].close()
        await sub[db_key].close()


async def tasks_left(before: set[asyncio.Task[Any]], *, grace: float, then_cancel: bool = False) -> list[str]:
    """Tasks started since ``before`` that are still running ``grace`` seconds from now (none, or a violation).
    ``then_cancel``: cancel those first, as ``run_app`` does at exit, and report only those that do not end
    within 3 s of it."""
    mine = asyncio.current_task()
    if then_cancel:
        for task in asyncio.all_tasks() - before - {mine}:
            task.cancel()
        grace = 3.0

    async def running() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() - before if t is not mine and not t.done()]

    if left := await poll(running, lambda tasks: not tasks, timeout=grace, every=0.02):
        names = ", ".join(f"{t.get_name()} ({t.get_coro().__qualname__})" for t in left)  # type: ignore[union-attr]
        return [f"{len(left)} task(s) it started still running: {names}"]
    return []


def expected(name: str, variant: Variant) -> str:
    """The verdict expected of a map: broken reproduced, fixed held, except for a gallery pitfall whose trap is
    not a cancel at an await (there both must hold)."""
    if name in PITFALLS and not PITFALLS[name].cancel_trap:
        return "held"
    return EXPECTED[variant]


# Pieces of a variant's life beyond one request, explored like the app's plumbing, for each variant.
LIFECYCLE: dict[str, Callable[[TestClient, Variant], _plumbing.Units]] = {"shutdown": shutdown}

# The app's own plumbing: no variant (the fixed side's), and it must hold at every point.
PLUMBING: dict[str, Callable[[TestClient], _plumbing.Units]] = {
    "hub-start": lambda c: _plumbing.hub_start(app_of(c)[settings_key].redis_url),
    "hub-subscribe": lambda c: _plumbing.hub_subscribe(app_of(c)[settings_key].redis_url),
    "hub-close": lambda c: _plumbing.hub_close(app_of(c)[settings_key].redis_url),
    "publisher-close": lambda c: _plumbing.publisher_close(),
    "loads-close": lambda c: _plumbing.loads_close(),
    "transfer-sweep": transfer_sweep,
}


async def reset_app(client: TestClient) -> None:
    """The app's own ``POST /api/reset``: empty tables, the variants' leftover backends ended, fresh pools."""
    async with client.post("/api/reset") as resp:
        assert resp.status == 200, await resp.text()


async def reset(client: TestClient, target: Target) -> None:
    await reset_app(client)
    admin = app_of(client)[admin_db_key]
    if target.name == "export":  # 150 rows: two chunks to stream
        await fetch_one(
            admin,
            "INSERT INTO transfers (id, variant, from_account, to_account, amount, status)"
            " SELECT gen_random_uuid(), v, 'alice', 'bob', 1, 'committed'"
            " FROM unnest(ARRAY['broken', 'fixed']) v, generate_series(1, 150); SELECT 1",
        )


async def explore_target(
    client: TestClient, target: Target, variant: Variant, *, depth: int = 1
) -> list[cancelmap.Trial]:
    plans = app_of(client)[plans_key]
    path = target.path.format(variant=variant)

    async def send(plan: cancelmap.Plan) -> str:
        plans.append(plan)
        try:
            async with client.request(target.method, path, json=target.body) as resp:
                await resp.read()
        except aiohttp.ClientError:
            pass  # the server hung up: its handler was cancelled
        try:
            async with asyncio.timeout(SETTLE):
                await plan.done.wait()
        except TimeoutError:
            return "hung"
        return plan.outcome

    async def reset_() -> None:
        await reset(client, target)

    async def invariant() -> list[str]:
        return await target.invariant(client, variant)

    return await cancelmap.explore_http(send, reset=reset_, invariant=invariant, depth=depth)


async def served(settings: Settings) -> TestClient:
    server = TestServer(create_app(settings))  # aiohttp's test server: handler_cancellation=True
    client = TestClient(server)
    await client.start_server()
    return client


def explore_settings() -> Settings:
    base = Settings.from_env()
    url = with_database(base.database_url, f"{database_name(base.database_url)}_explore")
    return dataclasses.replace(base, database_url=url, explore=True)


async def run(args: argparse.Namespace) -> int:
    settings = explore_settings()
    migrate(settings.database_url)
    client = await served(settings)
    names = list(MAP_TARGETS) if args.target == "all" else [args.target]
    report: list[dict[str, Any]] = []
    ok = True
    try:
        for name in names:
            plumbing = name in PLUMBING
            variants: tuple[Variant, ...] = (
                ("fixed",) if plumbing else (args.variant,) if args.variant else VARIANTS
            )
            for variant in variants:
                if plumbing:
                    trials = await PLUMBING[name](client).explore(depth=args.depth)
                elif name in LIFECYCLE:
                    trials = await LIFECYCLE[name](client, variant).explore(depth=args.depth)
                elif name in PITFALLS:
                    trials = await gallery(client, name, variant).explore(depth=args.depth)
                else:
                    trials = await explore_target(client, TARGETS[name], variant, depth=args.depth)
                found = cancelmap.as_json(trials)
                verdict = "reproduced" if found["violating"] else "held"
                title = name if plumbing else f"{name} / {variant}"
                violating = ", ".join(map(str, found["violating"])) or "none"
                points, runs = found["points"], found["trials_run"]
                print(f"\n{title}: {points} suspension points, {runs} trials, violating: {violating}")
                if found["not_reached"]:
                    short = ", ".join(map(str, found["not_reached"]))
                    print(f"  nondeterministic: runs ended before point(s) {short}")
                print(cancelmap.table(trials))
                print(f"VERDICT: {verdict}")
                ok = ok and verdict == expected(name, variant)
                report.append({"target": name, "variant": variant, "verdict": verdict, **found})
    finally:
        await client.close()
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.explore", description=__doc__.split("\n")[0])
    p.add_argument("target", help=f"one of {', '.join(MAP_TARGETS)}, or all")
    p.add_argument("--variant", choices=VARIANTS)
    p.add_argument("--depth", type=int, choices=[1, 2], default=1, help="2: cancel again inside each cleanup")
    p.add_argument("--json", type=Path, help="write the maps as JSON here")
    args = p.parse_args(argv)
    if args.target != "all" and args.target not in MAP_TARGETS:
        known = ", ".join(MAP_TARGETS)
        print(f"unknown target {args.target!r}; targets: {known}, all", file=sys.stderr)
        return 2
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
