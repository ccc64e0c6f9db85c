"""The talk: the README's "Give this talk" steps, in order, as the dashboard's talk mode runs them (→ runs the
next). Each step shows its lesson's broken and fixed code side by side, the lines that differ marked, beside
the step's live figures. The README's numbered list is this list (tests/test_readme.py checks it)."""

from __future__ import annotations

import ast
import difflib
import inspect
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .scenario import Scenario
from .scenarios.cancellation import PITFALLS
from .settings import Variant


@dataclass(frozen=True)
class Step:
    title: str  # bold in the README
    say: str  # what to point at while it runs
    action: Literal["load", "ladder", "pitfall", "reset"]
    scenario: str | None = None  # load: the scenario (its first broken/fixed route is the code shown)
    variant: Variant | None = None
    pitfall: str | None = None  # pitfall: runs broken, then fixed

    @property
    def readme(self) -> str:
        return f"**{self.title}** — {self.say}"


TALK = (
    Step(
        "Scenario 1, broken",
        '400 requests, half hung up. "orders without items" climbs, "server backends" hits the role\'s limit'
        " of 30, and from then on every broken request is refused. `/healthz` stays green: the fixed side logs"
        " in as its own role.",
        "load",
        "disconnect",
        "broken",
    ),
    Step(
        "Scenario 1, fixed",
        "the same load: 0 orders without items, backends near the pool size.",
        "load",
        "disconnect",
        "fixed",
    ),
    Step(
        "Scenario 1, the ladder",
        "the middle step between them, a transaction without the shield, under the same orders-only load:"
        " never half an order, but the orders whose client hung up are rolled back. The transaction buys"
        " atomicity; the shield buys finishing what a client started.",
        "ladder",
        "disconnect",
    ),
    Step(
        "Scenario 2, broken",
        "200 event streams: broken serves 20 (its pool), then every Redis call of the variant fails.",
        "load",
        "pubsub",
        "broken",
    ),
    Step("Scenario 2, fixed", "all 200 streams on one Redis connection.", "load", "pubsub", "fixed"),
    Step(
        "Scenario 2, the ladder",
        "the middle step closes each request's PubSub: nothing leaks any more, and Redis works again once the"
        " subscribers leave, but while they are live the pool still refuses all but 20. Only the hub serves"
        " them all.",
        "ladder",
        "pubsub",
    ),
    Step(
        "Scenario 3, broken",
        "the load runs its own app and SIGTERMs it mid-load: accepted transfers are lost (the load panel shows"
        " the verdict; the figures are that child's, not this dashboard's).",
        "load",
        "shield",
        "broken",
    ),
    Step("Scenario 3, fixed", "the same stop: every accepted transfer committed.", "load", "shield", "fixed"),
    Step(
        "The gallery, swallowed-cancel",
        "one `except BaseException` around an await: the timeout never fires. Broken, then fixed; then try"
        " `blocking-call` from its row while a load runs.",
        "pitfall",
        pitfall="swallowed-cancel",
    ),
    Step("Reset demo", "between takes (`POST /api/reset`): every figure on the page back to 0.", "reset"),
)


def side_by_side(broken: Callable[..., Any], fixed: Callable[..., Any]) -> dict[str, Any]:
    """Both functions' code without their docstrings (shown apart, as ``why``), each line marked ``changed``
    where the two differ; the functions' own names do not count as a difference."""
    codes = {variant: _code(fn) for variant, fn in (("broken", broken), ("fixed", fixed))}
    keys = {
        variant: [line.replace(fn.__name__, "handler") for line in codes[variant][1]]
        for variant, fn in (("broken", broken), ("fixed", fixed))
    }
    changed: dict[str, set[int]] = {"broken": set(), "fixed": set()}
    for tag, b1, b2, f1, f2 in difflib.SequenceMatcher(None, keys["broken"], keys["fixed"]).get_opcodes():
        if tag != "equal":
            changed["broken"].update(range(b1, b2))
            changed["fixed"].update(range(f1, f2))
    return {
        variant: {
            "why": why,
            "lines": [{"text": t, "changed": i in changed[variant]} for i, t in enumerate(lines)],
        }
        for variant, (why, lines) in codes.items()
    }


def _code(fn: Callable[..., Any]) -> tuple[str, list[str]]:
    source = textwrap.dedent(inspect.getsource(fn))
    lines = source.splitlines()
    node = ast.parse(source).body[0]
    assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    doc = ast.get_docstring(node) or ""
    first = node.body[0]
    if doc and isinstance(first, ast.Expr):
        del lines[first.lineno - 1 : first.end_lineno]
    return " ".join(doc.split()), lines


def described(scenarios: Sequence[Scenario]) -> list[dict[str, Any]]:
    """The talk as the page gets it (``/api/scenarios``): each step with its code side by side; a step whose
    scenario this app does not serve is left out."""
    by_name = {s.name: s for s in scenarios}
    out = []
    for step in TALK:
        if step.scenario is not None and step.scenario not in by_name:
            continue
        code, labels = None, None
        if step.scenario is not None:
            scenario = by_name[step.scenario]
            lesson = next(r for r in scenario.routes if r.broken is not r.fixed)
            if step.action == "ladder":  # its middle step beside the fixed handler: the difference is the shield
                middle = scenario.rungs[0]
                code, labels = side_by_side(middle.handler, lesson.fixed), {"broken": f"middle: {middle.title}"}
            else:
                code = side_by_side(lesson.broken, lesson.fixed)
            source = scenario.source
        elif step.pitfall is not None:
            pitfall = PITFALLS[step.pitfall]
            code = side_by_side(pitfall.broken, pitfall.fixed)
            source = pitfall.source
        out.append(
            {
                "title": step.title,
                "say": step.say,
                "action": step.action,
                "scenario": step.scenario,
                "variant": step.variant,
                "pitfall": step.pitfall,
                "code": code,
                "labels": labels or {},
                "source": source if code else None,
            }
        )
    return out
