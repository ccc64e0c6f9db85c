"""The ladder: broken, its middle steps, then fixed, under the same load, one after another, side by side.

    python -m scripts.ladder disconnect [--base-url URL] [--requests N] [--seed S]       (make ladder)

One pair can hide two lessons. Scenario 1's broken handler writes the order in two autocommit statements;
its fixed one uses a transaction *and* the shield. The middle step, a transaction without the shield, shows
what each buys: the transaction, atomicity (never half an order); the shield, finishing what a client started
(no order lost because its client hung up). Each step gets the same orders-only load (same seed, a reset
before each) against a running app, and the table says what became of the orders whose client hung up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from app.scenarios.disconnect import SCENARIO

from . import load
from ._common import require_loopback

COLUMNS = ("hung_up", "landed_whole", "half_written", "gone")


def steps() -> list[tuple[str, str, str | None]]:
    """(label, variant, rung) from broken to fixed."""
    middle = [(f"middle: {r.title}", "broken", r.name) for r in SCENARIO.rungs]
    return [
        ("broken: two autocommit writes", "broken", None),
        *middle,
        ("fixed: transaction + shield", "fixed", None),
    ]


async def climb(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for label, variant, rung in steps():
        report = Path(tempfile.mkdtemp(prefix="pitfalls-ladder-")) / "load.json"
        argv = ["disconnect", "--variant", variant, "--base-url", args.base_url, "--reset", "--json", str(report)]
        argv += ["--report-share", "0", "--requests", str(args.requests), "--seed", str(args.seed)]
        argv += ["--rung", rung] if rung else []
        print(f"\n== {label}", flush=True)
        await load.run_reported(load.parser().parse_args(argv))
        result = json.loads(report.read_text())
        rows.append({"step": label, "verdict": result["verdict"], **result["hung_up_orders"]})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    head = f"{'step':<36}{'hung up':>9}{'landed whole':>14}{'half-written':>14}{'gone':>7}  orders whole?"
    lines = [head, "-" * len(head)]
    for row in rows:
        whole = "yes" if row["half_written"] == 0 else "NO"
        lines.append(
            f"{row['step']:<36}{row['hung_up']:>9}{row['landed_whole']:>14}{row['half_written']:>14}"
            f"{row['gone']:>7}  {whole}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.ladder", description=__doc__.split("\n")[0])
    p.add_argument("scenario", choices=["disconnect"])
    p.add_argument("--base-url", default="http://127.0.0.1:8080", help="a running app (loopback only)")
    p.add_argument("--requests", type=int, default=200, help="orders per step (1..2000)")
    p.add_argument("--seed", type=int, default=7, help="the same for every step")
    p.add_argument("--json", type=Path, help="write the rows as JSON here")
    args = p.parse_args(argv)
    if not 1 <= args.requests <= 2000:
        print("--requests 1..2000", file=sys.stderr)
        return 2
    require_loopback(args.base_url)
    rows = asyncio.run(climb(args))
    print("\nWhat became of the orders whose client hung up (same load, same seed, each step after a reset):")
    print(table(rows))
    print(
        "\nThe transaction makes every order whole; only the shield also finishes the orders that clients "
        "started and then left ('gone' on the middle step: rolled back with the cancel)."
    )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
