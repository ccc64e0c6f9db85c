"""The ladders: broken, its middle step, then fixed, under the same load, one after another, side by side.

    python -m scripts.ladder disconnect|pubsub [--base-url URL] [--requests N] [--seed S]     (make ladder)

One pair can hide two lessons. Scenario 1's fixed handler adds a transaction *and* a shield; the middle step,
a transaction without the shield, shows what each buys. Scenario 2's broken handler both leaks its PubSub and
spends a connection per subscriber; the middle step closes its PubSub and still hits the wall. Each step gets
the same load (same seed, a reset before each) against a running app; the table puts the figures that tell
the steps apart side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.scenario import Scenario
from app.scenarios import disconnect, pubsub

from . import load
from ._common import require_loopback


@dataclass(frozen=True)
class Ladder:
    scenario: Scenario
    broken: str  # what the broken step is, in a few words
    fixed: str
    load_args: tuple[str, ...]  # what every step's load adds to scripts.load's defaults
    requests: int
    columns: tuple[tuple[str, Callable[[dict[str, Any]], object]], ...]  # from each step's --json report
    question: str  # what the table answers
    answer: str


LADDERS = {
    "disconnect": Ladder(
        disconnect.SCENARIO,
        "two autocommit writes",
        "transaction + shield",
        ("--report-share", "0"),
        200,
        (
            ("hung up", lambda r: r["hung_up_orders"]["hung_up"]),
            ("landed whole", lambda r: r["hung_up_orders"]["landed_whole"]),
            ("half-written", lambda r: r["hung_up_orders"]["half_written"]),
            ("gone", lambda r: r["hung_up_orders"]["gone"]),
            ("orders whole?", lambda r: "yes" if r["hung_up_orders"]["half_written"] == 0 else "NO"),
        ),
        "What became of the orders whose client hung up (same load, same seed, each step after a reset):",
        "The transaction makes every order whole; only the shield also finishes the orders that clients started "
        "and then left ('gone' on the middle step: rolled back with the cancel).",
    ),
    "pubsub": Ladder(
        pubsub.SCENARIO,
        "a PubSub per request, never closed",
        "one hub per process",
        ("--messages", "5"),
        60,
        (
            ("subscribers", lambda r: r["requests"]),
            ("refused", lambda r: r["invariant"]["observed"]["subscribers_refused"]),
            ("publish after all left", lambda r: r["after_they_left"]["publish_status"]),
            ("Redis conns held after", lambda r: r["after_they_left"]["redis_connections_in_use"]),
        ),
        "What the variant can still do (same subscribers, a quarter dropped abruptly, each step after a reset):",
        "Closing the PubSub stops the leak: once the subscribers leave, Redis calls work again. It does not "
        "lift the wall: while they are live, each holds a connection. Only the hub serves them all.",
    ),
}


def steps(ladder: Ladder) -> list[tuple[str, str, str | None]]:
    """(label, variant, rung) from broken to fixed."""
    middle = [(f"middle: {r.title}", "broken", r.name) for r in ladder.scenario.rungs]
    return [(f"broken: {ladder.broken}", "broken", None), *middle, (f"fixed: {ladder.fixed}", "fixed", None)]


async def climb(ladder: Ladder, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for label, variant, rung in steps(ladder):
        report = Path(tempfile.mkdtemp(prefix="pitfalls-ladder-")) / "load.json"
        argv = [ladder.scenario.name, "--variant", variant, "--base-url", args.base_url, "--reset"]
        argv += [
            "--json",
            str(report),
            "--requests",
            str(args.requests or ladder.requests),
            "--seed",
            str(args.seed),
        ]
        argv += [*ladder.load_args, *(["--rung", rung] if rung else [])]
        print(f"\n== {label}", flush=True)
        await load.run_reported(load.parser().parse_args(argv))
        result = json.loads(report.read_text())
        rows.append({"step": label, "verdict": result["verdict"], **{k: f(result) for k, f in ladder.columns}})
    return rows


def table(ladder: Ladder, rows: list[dict[str, Any]]) -> str:
    first = max(len(row["step"]) for row in rows) + 2
    widths = [max(len(name), 6) + 2 for name, _ in ladder.columns]
    head = "step".ljust(first) + "".join(
        f"{name:>{w}}" for (name, _), w in zip(ladder.columns, widths, strict=True)
    )
    lines = [head, "-" * len(head)]
    for row in rows:
        cells = "".join(f"{row[name]!s:>{w}}" for (name, _), w in zip(ladder.columns, widths, strict=True))
        lines.append(row["step"].ljust(first) + cells)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.ladder", description=__doc__.split("\n")[0])
    p.add_argument("scenario", choices=list(LADDERS))
    p.add_argument("--base-url", default="http://127.0.0.1:8080", help="a running app (loopback only)")
    p.add_argument("--requests", type=int, help="requests (pubsub: subscribers) per step, 1..2000")
    p.add_argument("--seed", type=int, default=7, help="the same for every step")
    p.add_argument("--json", type=Path, help="write the rows as JSON here")
    args = p.parse_args(argv)
    if args.requests is not None and not 1 <= args.requests <= 2000:
        print("--requests 1..2000", file=sys.stderr)
        return 2
    require_loopback(args.base_url)
    ladder = LADDERS[args.scenario]
    rows = asyncio.run(climb(ladder, args))
    print(f"\n{ladder.question}\n{table(ladder, rows)}\n\n{ladder.answer}")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
