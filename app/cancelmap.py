"""The cancellation map: run a unit of work once to record its suspension points, then once per point with a
cancellation delivered exactly there, and report what the caller saw at each.

Every ``await``, every step of an ``async for`` and every entry and exit of an ``async with`` that really
suspends is a point where a task can be cancelled. ``explore`` makes each of them happen on purpose.

How a cancel is delivered "at the k-th suspension": the unit's coroutine is driven by ``_Driven``, a thin
awaitable that passes every value between the coroutine and its task, counting the times the coroutine
suspends. At the k-th it calls ``task.cancel()`` while the task is still inside that step, so asyncio cancels
the very future the unit is suspended on — what a client hang-up does to a handler, without the timing.
Only public coroutine attributes are read (``cr_await``, ``cr_frame``, ``gi_yieldfrom``): see ``chain``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import linecache
import logging
import warnings
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from aiohttp import web, web_app
from aiohttp.typedefs import Middleware

PROJECT = Path(__file__).resolve().parent.parent
NOT_REACHED = ("finished", "finished before the point")  # the run ended before the point to cancel at
LEAKS = ("Task was destroyed but it is pending", "exception was never retrieved", "was never awaited")
SETTLE = 5.0  # how long a cancelled unit may take to finish its cleanup before it counts as hung


@dataclass(frozen=True, slots=True)
class Point:
    """Where a unit was suspended: the outermost frame of the project's own code, and the innermost awaitable."""

    where: str  # "app/hub.py:123"
    line: str  # the source line there
    awaiting: str  # what the innermost coroutine waits on, e.g. "Future" or "aiopg.connection._poll"


@dataclass
class Trial:
    k: int  # cancelled at its k-th suspension (1-based)
    point: Point | None
    outcome: str  # "cancelled", "returned" (the cancel was swallowed), "raised <Exc>", "hung"
    violations: list[str] = field(default_factory=list)
    second: int | None = None  # depth 2: cancelled again at the j-th suspension of the cleanup the first started
    second_point: Point | None = None

    @property
    def held(self) -> bool:
        return not self.violations

    @property
    def reached(self) -> bool:
        """Whether this run got as far as the point: a run with fewer points than the recorded ones is a finding
        about the unit (its cancellation points are not the same every run), reported apart, not a violation."""
        return self.outcome not in NOT_REACHED


def chain(coro: Any) -> list[Any]:
    """The chain of awaitables a suspended coroutine is waiting through, outermost first. The one function
    here that reads coroutine internals (public attributes on 3.11 to 3.13)."""
    out = []
    while coro is not None:
        out.append(coro)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return out


def locate(coro: Any) -> Point:
    frames: list[FrameType] = []
    innermost = "?"
    for link in chain(coro):
        frame = getattr(link, "cr_frame", None) or getattr(link, "gi_frame", None)
        if frame is not None:
            frames.append(frame)
            innermost = f"{frame.f_globals.get('__name__', '?')}.{frame.f_code.co_name}"
        else:
            innermost = type(link).__name__
    ours = [f for f in frames if _ours(f.f_code.co_filename)]
    frame = ours[-1] if ours else (frames[-1] if frames else None)
    if frame is None:
        return Point("?", "", innermost)
    filename, lineno = frame.f_code.co_filename, frame.f_lineno
    where = f"{_relative(filename)}:{lineno}"
    return Point(where, linecache.getline(filename, lineno).strip(), innermost)


def _ours(filename: str) -> bool:
    path = Path(filename)
    return path.is_relative_to(PROJECT) and ".venv" not in path.parts and path.name != "cancelmap.py"


def _relative(filename: str) -> str:
    path = Path(filename)
    return str(path.relative_to(PROJECT)) if path.is_relative_to(PROJECT) else path.name


class _Driven:
    """Awaits ``coro`` step by step, recording each suspension; cancels its own task at each suspension whose
    (1-based) number is in ``cancels``."""

    def __init__(self, coro: Coroutine[Any, Any, Any], cancels: tuple[int, ...] = ()) -> None:
        self.coro = coro
        self.cancels = cancels
        self.points: list[Point] = []
        self.delivered = 0

    def __await__(self) -> Generator[Any, Any, Any]:
        task = asyncio.current_task()
        assert task is not None
        to_send: Any = None
        to_throw: BaseException | None = None
        while True:
            try:
                if to_throw is not None:
                    error, to_throw = to_throw, None
                    yielded = self.coro.throw(error)
                else:
                    yielded = self.coro.send(to_send)
            except StopIteration as stop:
                return stop.value
            self.points.append(locate(self.coro))
            if len(self.points) in self.cancels:
                self.delivered += 1
                task.cancel()  # the task is mid-step: asyncio cancels the future we are about to wait on
            try:
                to_send = yield yielded
            except BaseException as exc:  # everything the task throws goes into the unit
                to_throw = exc


async def record(unit: Callable[[], Coroutine[Any, Any, Any]], *, settle: float = SETTLE) -> list[Point]:
    """Run the unit once, uncancelled (at most ``settle`` seconds), and return its suspension points in order."""
    driven = _Driven(unit())
    task = asyncio.create_task(_drive(driven))
    done, _ = await asyncio.wait({task}, timeout=settle)
    if not done:
        task.cancel()
        raise TimeoutError(f"the unit did not finish within {settle} s uncancelled: nothing to explore")
    task.result()
    return driven.points


async def _drive(driven: _Driven) -> Any:
    return await driven


async def cancel_at(
    unit: Callable[[], Coroutine[Any, Any, Any]], cancels: tuple[int, ...], *, settle: float = SETTLE
) -> tuple[list[Point], str]:
    """Run a fresh unit, cancel it at each suspension numbered in ``cancels``, and return all its suspension
    points (the cancelled run's: those after the first cancel are its cleanup's) and what its caller saw."""
    driven = _Driven(unit(), cancels)
    task = asyncio.create_task(_drive(driven))
    done, _ = await asyncio.wait({task}, timeout=settle)
    if not done:
        task.cancel()  # give up on it: a hang is the finding
        await asyncio.wait({task}, timeout=settle)
        if not task.done():
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return driven.points, "hung"
    if task.cancelled():
        return driven.points, "cancelled"
    exc = task.exception()
    if _only_cancellations(exc):
        return driven.points, "cancelled"
    if exc is not None:
        return driven.points, f"raised {type(exc).__name__}"
    return driven.points, "returned" if driven.delivered else "finished before the point"


class _Leaks(logging.Handler):
    """What asyncio and the interpreter say about work left behind, during one trial: a task destroyed while
    pending, a task's or future's exception never retrieved (asyncio's log), a coroutine never awaited (a
    warning). Collected after a garbage collection, so what the trial dropped is found in the same trial."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.found += [f"asyncio: {leak}" for leak in LEAKS if leak in message]

    @contextlib.contextmanager
    def watching(self) -> Iterator[list[str]]:
        gc.collect()  # what earlier runs dropped is theirs, not this trial's
        logger = logging.getLogger("asyncio")
        logger.addHandler(self)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            try:
                yield self.found
            finally:
                gc.collect()
                logger.removeHandler(self)
        self.found += [f"warning: {w.message}" for w in caught if "never awaited" in str(w.message)]


def _only_cancellations(exc: BaseException | None) -> bool:
    """aiohttp's clean-up goes on through a cancelled context (so every context still gets its exit) and then
    raises the cancellations it collected: one as itself, several as ``CleanupError(msg, [errors])``. Several
    cancellations, nothing else, is still the cancellation reaching its caller."""
    if not isinstance(exc, web_app.CleanupError) or len(exc.args) < 2:
        return False
    errors = list(exc.args[1])
    return bool(errors) and all(isinstance(e, asyncio.CancelledError) for e in errors)


async def explore(
    unit: Callable[[], Coroutine[Any, Any, Any]],
    *,
    invariant: Callable[[], Awaitable[list[str]]] | None = None,
    reset: Callable[[], Awaitable[None]] | None = None,
    expect: str = "cancelled",
    settle: float = SETTLE,
    limit: int = 200,
    depth: int = 1,
) -> list[Trial]:
    """Cancel a fresh ``unit()`` at each of its suspension points in turn (``reset`` before each run, up to
    ``limit`` points). A trial violates when the caller did not see ``expect`` (by default the cancellation
    itself: a unit that swallows it, raises something else or hangs is wrong) or ``invariant`` lists
    anything afterwards. ``depth=2`` also cancels again at each suspension point of the cleanup that each
    first cancel started (what SIGTERM after a hang-up does, or ``asyncio.run`` cancelling leftovers)."""

    async def trial(cancels: tuple[int, ...]) -> tuple[list[Point], Trial]:
        if reset is not None:
            await reset()
        leaks = _Leaks()
        with leaks.watching():
            points, outcome = await cancel_at(unit, cancels, settle=settle)
            violations = (
                [] if outcome in (expect, *NOT_REACHED) else [f"caller saw {outcome!r}, expected {expect!r}"]
            )
            if invariant is not None:
                violations += await invariant()
        violations += leaks.found
        k, second = cancels[0], (cancels[1] - cancels[0] if len(cancels) > 1 else None)
        return points, Trial(
            k, _nth(points, k), outcome, violations, second, _nth(points, cancels[1]) if second else None
        )

    if reset is not None:
        await reset()
    leaks = _Leaks()
    with leaks.watching():
        recorded = await record(unit, settle=settle)
    trials = [Trial(0, None, "finished", leaks.found)] if leaks.found else []  # uncancelled, and yet
    for k in range(1, min(len(recorded), limit) + 1):
        points, first = await trial((k,))
        trials.append(first)
        if depth >= 2:
            for j in range(1, min(len(points) - k, limit) + 1):
                trials.append((await trial((k, k + j)))[1])
    return trials


def _nth(points: list[Point], n: int) -> Point | None:
    return points[n - 1] if len(points) >= n else None


def table(trials: list[Trial]) -> str:
    """One line per trial: k, where, outcome, violations."""
    lines = []
    for t in trials:
        point = t.second_point if t.second else t.point
        where = f"{point.where} {point.line}" if point else "?"
        k = f"{t.k}+{t.second}" if t.second else f"{t.k}"
        verdict = "; ".join(t.violations) or ("held" if t.reached else "not reached in this run (fewer points)")
        lines.append(f"{k:>5}  {where[:70]:<70}  {t.outcome:<12}  {verdict}")
    return "\n".join(lines)


# --- HTTP units: the handler's own task, cancelled as a client hang-up does --------------------------------


@dataclass
class Plan:
    """What the explore middleware does with the next request: record its suspension points, and cancel its
    handler's task at each suspension numbered in ``cancels``. Filled in with what happened."""

    cancels: tuple[int, ...] = ()
    points: list[Point] = field(default_factory=list)
    outcome: str = ""  # "cancelled", "returned", "finished", "raised <Exc>"; "" while the handler runs
    done: asyncio.Event = field(default_factory=asyncio.Event)


def explore_middleware(plans: list[Plan]) -> Middleware:
    """Outermost middleware of an app built for exploring (``Settings.explore``): the request's whole
    handling, middlewares included, runs through ``_Driven`` in aiohttp's own handler task. With
    ``handler_cancellation=True`` a hang-up is exactly ``task.cancel()`` on that task at its current await;
    this cancels it at a chosen await instead of a random one."""

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[..., Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not plans:
            return await handler(request)
        plan = plans.pop(0)
        driven = _Driven(handler(request), plan.cancels)  # type: ignore[arg-type]  # an Awaitable, in fact a coroutine
        try:
            response = await driven
            plan.outcome = "returned" if driven.delivered else "finished"
            return response
        except asyncio.CancelledError:
            plan.outcome = "cancelled"
            raise
        except Exception as exc:
            plan.outcome = f"raised {type(exc).__name__}"
            raise
        finally:
            plan.points = driven.points
            plan.done.set()

    return middleware


async def explore_http(
    send: Callable[[Plan], Awaitable[str]],
    *,
    invariant: Callable[[], Awaitable[list[str]]],
    reset: Callable[[], Awaitable[None]],
    expect: str = "cancelled",
    limit: int = 200,
    depth: int = 1,
) -> list[Trial]:
    """``explore`` for a handler reached over HTTP: ``send(plan)`` makes the request with ``plan`` queued for the
    explore middleware and returns what the handler did. A sequence of points that differs between two
    uncancelled runs is reported as a finding (nondeterministic cancellation points), not hidden."""

    async def run(cancels: tuple[int, ...]) -> tuple[list[Point], str, list[str]]:
        await reset()
        plan = Plan(cancels=cancels)
        leaks = _Leaks()
        with leaks.watching():
            outcome = await send(plan)
            problems = await invariant()  # also lets the run settle before the next one
        return plan.points, outcome, problems + leaks.found

    await run(())  # warm up: the first run also opens pool connections, which later runs do not
    recorded = [(await run(()))[0] for _ in range(2)]
    trials = []
    if [p.where for p in recorded[0]] != [p.where for p in recorded[1]]:
        seen = [[p.where for p in points] for points in recorded]
        trials.append(Trial(0, None, "recorded twice", [f"nondeterministic: {seen[0]} vs {seen[1]}"]))
    for k in range(1, min(len(recorded[1]), limit) + 1):
        for cancels in [(k,)] + ([] if depth < 2 else [(k, k + j) for j in range(1, limit + 1)]):
            points, outcome, problems = await run(cancels)
            if len(cancels) > 1 and len(points) < cancels[1]:
                break  # past the end of this cleanup
            violations = (
                [] if outcome in (expect, *NOT_REACHED) else [f"handler saw {outcome!r}, expected {expect!r}"]
            ) + problems
            second = (cancels[1] - k, _nth(points, cancels[1])) if len(cancels) > 1 else (None, None)
            trials.append(Trial(k, _nth(points, k), outcome, violations, *second))
    return trials


def as_json(trials: list[Trial]) -> dict[str, Any]:
    return {
        "points": len([t for t in trials if t.k and not t.second]),
        "trials_run": len(trials),
        "violating": [f"{t.k}+{t.second}" if t.second else t.k for t in trials if not t.held],
        "not_reached": [f"{t.k}+{t.second}" if t.second else t.k for t in trials if t.k and not t.reached],
        "trials": [
            {
                "k": t.k,
                "second": t.second,
                "second_where": t.second_point.where if t.second_point else None,
                "where": t.point.where if t.point else None,
                "line": t.point.line if t.point else None,
                "awaiting": t.point.awaiting if t.point else None,
                "outcome": t.outcome,
                "violations": t.violations,
            }
            for t in trials
        ],
    }


def assert_held(trials: list[Trial]) -> None:
    """For tests: fail with the whole map when the unit did not hold at every point (or never suspended)."""
    assert trials, "the unit never suspended: nothing was explored"
    if not all(t.held for t in trials):
        raise AssertionError("cancellation map:\n" + table(trials))
