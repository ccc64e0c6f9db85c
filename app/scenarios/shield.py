"""Scenario ``shield``: work that must finish after the client is gone or the server is told to stop.

Symptom: transfers answered 202 ("accepted") that never happen; "Task exception was never retrieved" and
"Task was destroyed but it is pending" in the log at shutdown; exports that leave no audit record.
Cause: a bare ``asyncio.create_task`` (or ``asyncio.shield``) keeps the work alive when the client leaves, but
nobody owns it: on SIGTERM the app closes its database pool under it and cancels what is left, and its errors
go nowhere. Writing the audit record after the stream ties it to a client that may hang up first.
Fix: aiojobs owns the work. ``spawn`` puts the transfer in the scheduler, whose graceful close waits (bounded)
for its jobs *before* the pool closes; ``limit`` and ``pending_limit`` bound it (503 beyond); a transfer still
accepted after a crash is completed at the next start, at most once. The audit goes through
``aiojobs.aiohttp.shield`` from ``finally``, so sending stops at the hang-up and the audit does not.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass

import aiojobs
import aiojobs.aiohttp
import psycopg2
from aiohttp import web

from .. import openapi, resources, tasks, validation
from ..admission import Pass, protected
from ..db import VariantDb, connection_lost, fetch_all, fetch_one
from ..errors import BadRequest
from ..keys import (
    admin_db_key,
    db_key,
    gates_key,
    in_hand_key,
    long_reads_key,
    probe_key,
    settings_key,
    sweep_key,
    variant_key,
)
from ..scenario import Card, Figure, Load, Route, Scenario, of, shared
from ..settings import Variant
from ..state import VariantState
from ._common import count_failure, refused

log = logging.getLogger("app.shield")

ACCOUNTS = ("alice", "bob", "carol", "dave")
INITIAL_BALANCE = 1_000_000
RETRY_SECONDS = 60.0  # how long a transfer waits out an unreachable database before it is recorded failed


async def broken_create_transfer(request: web.Request) -> web.Response:
    """The transfer runs in a bare task: it survives the client leaving, but nobody owns it. At SIGTERM the
    app closes its pool under it and cancels what is left: accepted transfers are lost, their errors never
    retrieved. And a client that hangs up while the INSERT is on its way gets the row written but no task."""
    transfer, hold, key = await _transfer_request(request)
    transfer_id, new = await _accept(request, transfer, key)
    if new:
        asyncio.create_task(_run_transfer(request.app, transfer_id, hold))  # noqa: RUF006 (the pitfall)
    return web.json_response({"transfer_id": str(transfer_id)}, status=202)


async def fixed_create_transfer(request: web.Request) -> web.Response:
    """Admitted first (503 at once beyond what the scheduler can hold: nothing accepted ever waits), then
    accepting and handing over to aiojobs as one shielded unit, so a hang-up cannot land between them. The
    scheduler owns the transfer and waits for it at shutdown before the pool closes; one left accepted (a
    crash, a lost reply) is completed by the sweep, exactly once."""
    transfer, hold, key = await _transfer_request(request)
    passed = await request.app[gates_key].transfers.enter()
    unit = _accept_and_spawn(request, transfer, hold, key, passed)
    transfer_id = await aiojobs.aiohttp.shield(request, unit)
    return web.json_response({"transfer_id": str(transfer_id)}, status=202)


async def _accept_and_spawn(
    request: web.Request, transfer: Transfer, hold: float, key: str | None, passed: Pass
) -> uuid.UUID:
    try:
        transfer_id, new = await _accept(request, transfer, key)
    except BaseException:
        passed.leave()
        raise
    if new:
        await _spawn_transfer(request.app, transfer_id, hold, passed)
    else:
        passed.leave()  # a retry of a transfer accepted before: its first request owns it
    return transfer_id


async def _spawn_transfer(app: web.Application, transfer_id: uuid.UUID, hold: float, passed: Pass) -> None:
    """The scheduler owns the transfer from here; its admission place is given back when it ends. ``spawn``
    never waits: admission keeps the scheduler below its limits."""
    scheduler = aiojobs.aiohttp.get_scheduler_from_app(app)
    assert scheduler is not None
    app[in_hand_key].add(transfer_id)  # the sweep leaves it alone
    try:
        await scheduler.spawn(_owned_transfer(app, transfer_id, hold, passed))
    except BaseException:  # the scheduler is closing: the row stays accepted for the next sweep
        app[in_hand_key].discard(transfer_id)
        passed.leave()
        raise


async def _owned_transfer(app: web.Application, transfer_id: uuid.UUID, hold: float, passed: Pass) -> None:
    try:
        await protected(
            _run_transfer(app, transfer_id, hold),
            passed,
            what=f"transfer {transfer_id}",
            failed=count_failure(app),
        )
    finally:
        app[in_hand_key].discard(transfer_id)


async def broken_export(request: web.Request) -> web.StreamResponse:
    """The audit record is written after the stream: a client that hangs up cancels the handler at a write,
    and the export leaves no trace."""
    export, pace = Export(), _pace(request)
    response = await _stream_export(request, export, pace)
    await _audit(request.app, export)
    return response


async def fixed_export(request: web.Request) -> web.StreamResponse:
    """Sending may be cancelled at any write; the audit may not: it is written from ``finally`` under
    ``aiojobs.aiohttp.shield``, so a hang-up stops the stream at once and the audit still lands. (aiojobs
    discards a shielded job's exception once the request is cancelled: ``protected`` logs and counts it.)"""
    export, pace = Export(), _pace(request)
    passed = await request.app[gates_key].exports.enter()
    try:
        return await _stream_export(request, export, pace)
    finally:
        audit = protected(
            _audit(request.app, export), passed, what="export audit", failed=count_failure(request.app)
        )
        await aiojobs.aiohttp.shield(request, audit)


async def transfer_stats(request: web.Request) -> web.Response:
    variant = request.app[variant_key]
    accepted, committed, failed, balance, exports = await fetch_one(
        request.config_dict[admin_db_key],
        """
        SELECT count(*), count(*) FILTER (WHERE status = 'committed'), count(*) FILTER (WHERE status = 'failed'),
               (SELECT sum(balance) FROM accounts WHERE variant = %(v)s)::bigint,
               (SELECT count(*) FROM exports WHERE variant = %(v)s)
        FROM transfers WHERE variant = %(v)s
        """,
        {"v": variant},
    )
    return web.json_response(
        {
            "accepted": accepted,
            "committed": committed,
            "lost": int(accepted) - int(committed),  # type: ignore[call-overload]  # counts in-flight ones too: read it once the variant is quiet
            "failed": failed,
            "balance_total": balance,
            "exports_audited": exports,
        }
    )


# --- plumbing shared by both variants -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transfer:
    source: str
    target: str
    amount: int


@dataclass
class Export:
    rows_sent: int = 0
    completed: bool = False


async def _transfer_request(request: web.Request) -> tuple[Transfer, float, str | None]:
    hold = validation.query_seconds(request, "hold", default=0.2, hi=5)
    key = validation.idempotency_key(request)
    body = await validation.json_object(request)
    transfer = Transfer(
        validation.text(body, "from"),
        validation.text(body, "to"),
        validation.integer(body, "amount", lo=1, hi=10**6),
    )
    for account in (transfer.source, transfer.target):
        if account not in ACCOUNTS:
            raise BadRequest(f"unknown account {account!r}; accounts are {', '.join(ACCOUNTS)}")
    if transfer.source == transfer.target:
        raise BadRequest("'from' and 'to' must differ")
    return transfer, hold, key


async def _accept(request: web.Request, transfer: Transfer, key: str | None) -> tuple[uuid.UUID, bool]:
    """Durably record the transfer as accepted: from here on, losing it is the service's fault. With an
    ``Idempotency-Key`` seen before, nothing is written: the first transfer's id comes back (``new`` false),
    so a client that retries after a lost reply never moves the money twice."""
    variant = request.app[variant_key]
    request.app[probe_key].hit(f"{variant}.accepting")  # the INSERT goes out right after
    async with request.app[db_key].acquired() as conn, conn.cursor() as cur:
        await cur.execute(
            "INSERT INTO transfers (id, variant, from_account, to_account, amount, idempotency_key)"
            " VALUES (%s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (variant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING id",
            (str(uuid.uuid4()), variant, transfer.source, transfer.target, transfer.amount, key),
        )
        row = await cur.fetchone()
        if row is not None:
            return uuid.UUID(str(row[0])), True
        await cur.execute(
            "SELECT id, from_account, to_account, amount FROM transfers"
            " WHERE variant = %s AND idempotency_key = %s",
            (variant, key),
        )
        first = await cur.fetchone()
    assert first is not None  # keys are never deleted, only the whole table at a reset
    if Transfer(first[1], first[2], first[3]) != transfer:
        raise BadRequest("this Idempotency-Key was used for a different transfer")
    return uuid.UUID(str(first[0])), False


async def _run_transfer(app: web.Application, transfer_id: uuid.UUID, hold: float) -> None:
    """The transfer, retried while the database is unreachable or the transaction must be retried (a
    restart, a terminated backend, a deadlock): safe, since it runs at most once. Any other error, or one that
    outlasts RETRY_SECONDS, is recorded on the transfer, so it can never be lost silently."""
    loop = asyncio.get_running_loop()
    give_up, delay = loop.time() + RETRY_SECONDS, 0.1
    while True:
        try:
            return await _transfer_once(app, transfer_id, hold)
        except Exception as exc:
            # TimeoutError: no pool connection came in time (a busy database, not a broken one): retry too.
            retryable = connection_lost(exc) or isinstance(exc, TimeoutError)
            if not retryable or loop.time() + delay > give_up:
                await _record_failure(app[db_key], transfer_id, exc)
                raise
            log.warning("transfer %s: %s; retrying in %.1f s", transfer_id, type(exc).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def _transfer_once(app: web.Application, transfer_id: uuid.UUID, hold: float) -> None:
    """Debit, credit and ledger rows in one transaction, at most once per transfer id (the row is locked and
    must still be 'accepted')."""
    variant, probe = app[variant_key], app[probe_key]
    async with app[db_key].acquired() as conn, conn.cursor() as cur, cur.begin():
        await cur.execute(
            "SELECT from_account, to_account, amount FROM transfers"
            " WHERE id = %s AND status = 'accepted' FOR UPDATE SKIP LOCKED",
            (str(transfer_id),),
        )
        row = await cur.fetchone()
        if row is None:
            return  # done already, or being done right now (by another process's sweep, say)
        source, target, amount = row
        probe.hit(f"{variant}.transfer")
        await asyncio.sleep(hold)  # the slow step (a fraud check) inside the open transaction
        # Lock both accounts in one order (by name), or two opposite transfers deadlock; NO KEY UPDATE,
        # so as not to conflict with the foreign-key checks of transfers being accepted meanwhile.
        await cur.execute(
            "SELECT name FROM accounts WHERE variant = %s AND name IN (%s, %s) ORDER BY name FOR NO KEY UPDATE",
            (variant, source, target),
        )
        for account, delta in ((source, -amount), (target, amount)):
            await cur.execute(
                "UPDATE accounts SET balance = balance + %s WHERE variant = %s AND name = %s",
                (delta, variant, account),
            )
            await cur.execute(
                "INSERT INTO ledger (transfer_id, account, delta) VALUES (%s, %s, %s)",
                (str(transfer_id), account, delta),
            )
        await cur.execute(
            "UPDATE transfers SET status = 'committed', finished_at = now() WHERE id = %s", (str(transfer_id),)
        )
    probe.hit(f"{variant}.committed")


async def _record_failure(db: VariantDb, transfer_id: uuid.UUID, exc: Exception) -> None:
    log.error("transfer %s failed: %r", transfer_id, exc)
    try:
        async with db.acquired() as conn, conn.cursor() as cur:
            await cur.execute(
                "UPDATE transfers SET status = 'failed', error = %s, finished_at = now()"
                " WHERE id = %s AND status = 'accepted'",
                (repr(exc)[:500], str(transfer_id)),
            )
    except Exception:
        log.exception("could not record the failure of transfer %s", transfer_id)


def _pace(request: web.Request) -> float:
    return validation.query_seconds(request, "pace", default=0, hi=1)


async def _stream_export(request: web.Request, export: Export, pace: float) -> web.StreamResponse:
    """The variant's transfers as CSV, 100 rows a chunk, ``pace`` seconds apart (0..1, to watch it stream)."""
    variant = request.app[variant_key]
    rows = await fetch_all(
        request.app[db_key],
        "SELECT id, from_account, to_account, amount, status FROM transfers"
        " WHERE variant = %s ORDER BY accepted_at LIMIT 100000",
        (variant,),
    )
    response = web.StreamResponse(headers={"Content-Type": "text/csv"})
    with request.app[long_reads_key].registered(request, request.remote or ""):  # cut at shutdown
        await response.prepare(request)
        await response.write(b"id,from,to,amount,status\n")
        for start in range(0, len(rows), 100):
            chunk = rows[start : start + 100]
            await response.write("".join(",".join(map(str, row)) + "\n" for row in chunk).encode())
            export.rows_sent += len(chunk)
            request.app[probe_key].hit(f"{variant}.export_chunk")
            await asyncio.sleep(pace)
        await response.write_eof()
    export.completed = True
    return response


async def _audit(app: web.Application, export: Export) -> None:
    async with app[db_key].acquired() as conn, conn.cursor() as cur:
        await cur.execute(
            "INSERT INTO exports (variant, rows_sent, completed) VALUES (%s, %s, %s)",
            (app[variant_key], export.rows_sent, export.completed),
        )


# --- the sweep (fixed only): transfers left accepted with nobody working on them --------------------------


async def sweep_once(app: web.Application, *, older_than: float) -> int:
    """Hand every transfer left accepted (by a crash, a lost reply, a stop mid-drain) more than ``older_than``
    seconds ago to the scheduler, as far as admission allows; the rest waits for the next sweep. Safe against
    another process sweeping too: each transfer runs at most once (row lock and status check)."""
    sql = (
        "SELECT id FROM transfers WHERE variant = %s AND status = 'accepted'"
        " AND accepted_at < now() - make_interval(secs => %s) ORDER BY accepted_at LIMIT 1000"
    )
    rows = await fetch_all(app[db_key], sql, (app[variant_key], older_than))
    handed = 0
    for (raw_id,) in rows:
        transfer_id = uuid.UUID(str(raw_id))
        if transfer_id in app[in_hand_key]:
            continue
        passed = app[gates_key].transfers.try_enter()
        if passed is None:
            break  # full: the next sweep goes on
        await _spawn_transfer(app, transfer_id, 0, passed)
        handed += 1
    if handed:
        log.warning("sweep: completing %d transfers left accepted", handed)
    return handed


async def _sweep_forever(app: web.Application) -> None:
    interval = app[settings_key].transfer_sweep_interval
    older_than = 0.0  # at start-up everything accepted is from before (or a peer's: harmless, at most once)
    while True:
        try:
            await sweep_once(app, older_than=older_than)
        except (psycopg2.Error, TimeoutError, RuntimeError) as exc:  # database away, scheduler closing
            log.error("sweep of accepted transfers failed: %s", type(exc).__name__)
        app[probe_key].hit(f"{app[variant_key]}.sweep")
        older_than = interval
        await asyncio.sleep(interval)


async def _start_sweep(app: web.Application) -> None:
    app[sweep_key] = asyncio.create_task(_sweep_forever(app), name="transfer-sweep")


async def _stop_sweep(app: web.Application) -> None:
    await tasks.stop(app[sweep_key])  # at shutdown, before the scheduler drains


TRANSFER_BODY = {
    "type": "object",
    "required": ["from", "to", "amount"],
    "properties": {
        "from": {"enum": list(ACCOUNTS)},
        "to": {"enum": list(ACCOUNTS)},
        "amount": {"type": "integer", "minimum": 1, "maximum": 1000000},
    },
}


def _setup(app: web.Application, variant: Variant) -> None:
    if variant == "fixed":
        app[in_hand_key] = set()
        app.on_startup.append(_start_sweep)  # after the cleanup contexts: the scheduler exists by then
        app.on_shutdown.append(_stop_sweep)


def _lost(v: VariantState) -> int:
    """Transfers not committed beyond those the scheduler still holds (those are on their way, not lost)."""
    return max(0, (v["invariants"]["transfers_lost"] or 0) - v["jobs"]["active"] - v["jobs"]["pending"])


SCENARIO = Scenario(
    name="shield",
    title="Work that must outlive the request",
    module=__name__,
    routes=(
        Route(
            "POST",
            "/transfers",
            broken_create_transfer,
            fixed_create_transfer,
            openapi.operation(
                "accepted",
                "202",
                params=[openapi.seconds("hold", 5, 0.2)],
                requestBody=openapi.json_body(TRANSFER_BODY),
            ),
        ),
        shared("GET", "/transfers/stats", transfer_stats, openapi.operation("transfer stats")),
        Route(
            "GET",
            "/export",
            broken_export,
            fixed_export,
            openapi.operation("CSV", params=[openapi.seconds("pace", 1, 0)]),
        ),
    ),
    # The order is half of the fix: contexts close in reverse, so the scheduler, listed after the pool, closes
    # first; its graceful close finishes the accepted transfers while the pool they write through is still open.
    contexts=lambda variant: (resources.postgres, resources.jobs),
    setup=_setup,
    reset_sql=f"TRUNCATE ledger, exports, transfers; UPDATE accounts SET balance = {INITIAL_BALANCE}",
    card=Card(
        failures=_lost,
        failures_label="accepted transfers lost",
        figures=(
            Figure("transfers not committed", lambda v: v["invariants"]["transfers_lost"]),
            Figure("aiojobs active / pending", lambda v: of(v["jobs"]["active"], v["jobs"]["pending"])),
            Figure("requests refused (5xx)", lambda v: refused(v, "shield")),
        ),
        spark=lambda v: v["invariants"]["transfers_lost"] or 0,
        spark_label="transfers not committed",
    ),
    load=Load(requests=200, dashboard_args=("--spawn-app",)),
    targets=("transfers", "export", "shutdown"),
)
