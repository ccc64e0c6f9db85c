"""The cancellation engine itself (app/cancelmap.py) on pure-asyncio units with known suspension points, and
the map of one real handler pair over HTTP (``python -m scripts.explore``)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Coroutine

import psycopg2
from aiohttp import web_app

from app import cancelmap
from app.scenarios.cancellation import PITFALLS
from app.settings import VARIANTS, Settings, Variant
from scripts import explore


async def three_points(log: list[str]) -> None:
    try:
        await asyncio.sleep(0)
        await asyncio.sleep(0.001)
        await asyncio.sleep(0)
        log.append("done")
    finally:
        log.append("cleanup")


async def swallows_at_the_second(log: list[str]) -> None:
    await asyncio.sleep(0)
    with contextlib.suppress(asyncio.CancelledError):  # the bug: a cancel here is eaten
        await asyncio.sleep(0.001)
    await asyncio.sleep(0)
    log.append("done")


async def test_records_every_suspension_point_in_order() -> None:
    log: list[str] = []
    points = await cancelmap.record(lambda: three_points(log))
    assert len(points) == 3
    assert [p.line for p in points] == [
        "await asyncio.sleep(0)",
        "await asyncio.sleep(0.001)",
        "await asyncio.sleep(0)",
    ]
    assert all(p.where.startswith("tests/test_cancelmap.py:") for p in points)


async def test_a_correct_unit_holds_at_every_point() -> None:
    log: list[str] = []
    trials = await cancelmap.explore(lambda: three_points(log))
    assert [t.outcome for t in trials] == ["cancelled"] * 3
    assert all(t.held for t in trials)
    assert log.count("cleanup") == 4 and log.count("done") == 1  # the recording run, then three cancelled ones


async def test_a_deliberately_broken_unit_is_caught_at_its_point() -> None:
    log: list[str] = []
    trials = await cancelmap.explore(lambda: swallows_at_the_second(log))
    assert [t.held for t in trials] == [True, False, True]
    assert trials[1].outcome == "returned"  # the cancel was swallowed: the caller never knew
    assert trials[1].point is not None and "asyncio.sleep(0.001)" in trials[1].point.line


async def test_a_unit_that_hangs_after_a_cancel_is_reported_hung() -> None:
    async def hangs() -> None:
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(3600)  # a cleanup that never ends (until cancelled again)
            raise

    trials = await cancelmap.explore(hangs, settle=0.2)
    assert [t.outcome for t in trials] == ["hung"]


async def test_the_orders_pair_over_http(settings: Settings) -> None:
    """broken fails at named points (an order without items; and, when the cancel lands while aiopg opens a
    connection for the pool, a cancel swallowed there: the handler returns); fixed holds at every point."""
    served = await explore.served(dataclasses.replace(settings, explore=True))
    try:
        broken = await explore.explore_target(served, explore.TARGETS["orders"], "broken")
        fixed = await explore.explore_target(served, explore.TARGETS["orders"], "fixed")
    finally:
        await served.close()
    bad = [t for t in broken if not t.held]
    known = ("without items", "expected 'cancelled'")
    assert bad and all(any(k in v for k in known for v in t.violations) for t in bad), cancelmap.table(broken)
    assert any(t.point and "asyncio.sleep(hold)" in t.point.line for t in bad), cancelmap.table(broken)
    assert fixed and all(t.held for t in fixed), cancelmap.table(fixed)


async def test_the_readme_example() -> None:
    """The README's "Cancellation map" example, as printed there: a user-style coroutine that keeps a
    counter of open connections, explored at every await; the buggy version is caught."""
    open_connections = 0

    async def handle(buggy: bool) -> None:
        nonlocal open_connections
        open_connections += 1
        if buggy:
            await asyncio.sleep(0.001)  # the bug: a cancel here skips the decrement
        try:
            await asyncio.sleep(0.001)
        finally:
            open_connections -= 1

    async def reset() -> None:
        nonlocal open_connections
        open_connections = 0

    async def invariant() -> list[str]:
        return [] if open_connections == 0 else [f"{open_connections} connection(s) leaked"]

    cancelmap.assert_held(await cancelmap.explore(lambda: handle(False), reset=reset, invariant=invariant))
    trials = await cancelmap.explore(lambda: handle(True), reset=reset, invariant=invariant)
    assert [t.held for t in trials] == [False, True]
    assert trials[0].violations == ["1 connection(s) leaked"]


async def test_aiohttps_collected_cancellations_still_count_as_the_cancel() -> None:
    """aiohttp's clean-up runs every context's exit through a cancel and raises what it collected: several
    cancellations arrive as ``CleanupError``. That is the cancel reaching the caller; anything else is not."""

    def raising(*errors: BaseException) -> Callable[[], Coroutine[None, None, None]]:
        async def unit() -> None:
            await asyncio.sleep(0)
            raise web_app.CleanupError("Multiple errors on cleanup stage", list(errors))

        return unit

    cancelled = raising(asyncio.CancelledError(), asyncio.CancelledError())
    mixed = raising(asyncio.CancelledError(), RuntimeError("pool closed"))
    assert (await cancelmap.cancel_at(cancelled, ()))[1] == "cancelled"
    assert (await cancelmap.cancel_at(mixed, ()))[1] == "raised CleanupError"


async def test_a_variants_shutdown_cancelled_anywhere(settings: Settings) -> None:
    """SIGTERM's shutdown with three transfers in flight, cancelled at each point and again inside its
    clean-up: fixed lands every accepted transfer exactly once (in the drain, or at the next start); broken's
    bare tasks lose them."""
    served = await explore.served(dataclasses.replace(settings, explore=True))
    try:
        broken = await explore.shutdown(served, "broken").explore(depth=1)
        fixed = await explore.shutdown(served, "fixed").explore(depth=2)
        sweep = await explore.transfer_sweep(served).explore(depth=2)
    finally:
        await served.close()
    assert any("never committed" in " ".join(t.violations) for t in broken), cancelmap.table(broken)
    assert fixed and all(t.held for t in fixed), cancelmap.table(fixed)
    assert sweep and all(t.held for t in sweep), cancelmap.table(sweep)


async def test_the_gallery_on_the_map(settings: Settings) -> None:
    """Each gallery pitfall's run, cancelled at each of its awaits: broken fails where its trap is a cancel at
    an await (swallowed-cancel, wait-for-race, slow-cleanup-timeout, first-wins), every fixed one holds.
    Before: the fixed gather-orphans lost an outside cancel that came while its TaskGroup tore down (3.11 to
    3.13.0 drop it: scripts.matrix), and the wait-for-race and self-cancel runs swallowed the caller's cancel or
    left a task behind."""
    served = await explore.served(dataclasses.replace(settings, explore=True))
    maps: dict[tuple[str, Variant], list[cancelmap.Trial]] = {}
    try:
        for name in PITFALLS:
            for variant in VARIANTS:
                maps[name, variant] = await explore.gallery(served, name, variant).explore()
    finally:
        await served.close()
    for (name, variant), trials in maps.items():
        verdict = "reproduced" if any(not t.held for t in trials) else "held"
        assert verdict == explore.expected(name, variant), (name, variant, cancelmap.table(trials))
    assert {name for name, p in PITFALLS.items() if p.cancel_trap} == {
        "swallowed-cancel",
        "wait-for-race",
        "slow-cleanup-timeout",
        "first-wins",  # cancelled while it waits, broken leaves the refused attempt's error never retrieved
    }


async def test_work_left_behind_is_a_violation() -> None:
    """A task dropped while pending, or a coroutine never awaited, during a trial: each is reported in that
    trial's violations, as asyncio and the interpreter say it, although the unit let the cancel through."""

    async def drops_a_task() -> None:
        loop = asyncio.get_running_loop()
        asyncio.ensure_future(_wait_for_nothing(loop.create_future()))  # noqa: RUF006 (the bug)
        await asyncio.sleep(0)

    async def forgets_an_await() -> None:
        asyncio.sleep(0)  # type: ignore[unused-coroutine]  # the bug
        await asyncio.sleep(0)

    dropped = await cancelmap.explore(drops_a_task)
    forgot = await cancelmap.explore(forgets_an_await)
    assert any("Task was destroyed but it is pending" in v for t in dropped for v in t.violations), dropped
    assert any("never awaited" in v for t in forgot for v in t.violations), forgot


async def _wait_for_nothing(fut: asyncio.Future[None]) -> None:
    await fut


async def test_a_run_with_fewer_points_is_reported_apart() -> None:
    """Points that differ between runs are a finding about the unit (not the same cancellation points every
    run), listed as not reached, not counted as a violation of what must hold."""
    runs: list[int] = []

    async def shrinking() -> None:
        runs.append(1)
        for _ in range(3 if len(runs) == 1 else 2):  # the recorded run suspends 3 times, later ones twice
            await asyncio.sleep(0)

    trials = await cancelmap.explore(shrinking)
    found = cancelmap.as_json(trials)
    assert (found["violating"], found["not_reached"]) == ([], [3]), cancelmap.table(trials)
    assert "not reached" in cancelmap.table(trials)


async def test_a_transaction_left_open_is_a_violation(settings: Settings) -> None:
    """Every handler target's invariant starts by waiting until its variant is quiet; then a backend of the
    variant's role still inside a transaction (a cancel that interrupted it, nobody rolled back) is reported."""
    served = await explore.served(dataclasses.replace(settings, explore=True))
    conn = psycopg2.connect(settings.variant_dsn("fixed"))
    try:
        assert await explore.quiet(served, "fixed") == []
        with conn.cursor() as cur:
            cur.execute("SELECT 1")  # psycopg2 opened a transaction and leaves it open
        assert await explore.quiet(served, "fixed") == ["1 backend(s) left idle in a transaction"]
    finally:
        conn.close()
        await served.close()
