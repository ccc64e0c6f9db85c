"""The dashboard's figures, live in the terminal (for when there is no browser).

python -m scripts.watch [--base-url URL] [--every 0.5] [--seconds N | --once]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import aiohttp
from rich.console import Console
from rich.live import Live
from rich.table import Table

from ._common import cannot_reach, fetch_json, require_loopback

ROWS: list[tuple[str, str, Any]] = [
    ("disconnect", "orders without items", lambda v: v["invariants"]["orders_without_items"]),
    ("disconnect", "requests refused (5xx)", lambda v: _r(v, "disconnect")),
    (
        "disconnect",
        "server backends / limit",
        lambda v: f"{v['postgres']['backends']} / {v['postgres']['role_connection_limit']}",
    ),
    ("disconnect", "pool in use / max", lambda v: f"{v['postgres']['pool_in_use']} / {v['postgres']['pool_max']}"),
    ("disconnect", "handlers cancelled", lambda v: v["handlers_cancelled"]),
    ("pubsub", "live subscribers", lambda v: v["subscribers"]),
    (
        "pubsub",
        "Redis connections / max",
        lambda v: f"{v['redis']['connections_in_use']} / {v['redis']['max_connections']}",
    ),
    ("pubsub", "requests refused (5xx)", lambda v: _r(v, "pubsub")),
    ("shield", "transfers not committed", lambda v: v["invariants"]["transfers_lost"]),
    ("shield", "aiojobs active / pending", lambda v: _of(v["jobs"], "active", "pending")),
]


def _of(figures: dict[str, Any], a: str, b: str) -> str:
    return f"{figures[a]} / {figures[b]}"


def _r(v: dict[str, Any], scenario: str) -> int:
    return int(v.get("requests", {}).get(scenario, {}).get("5xx", 0))


def table(snapshot: dict[str, Any], base: str) -> Table:
    t = Table(title=f"asyncio pitfalls — {base}", title_style="bold", expand=False)
    t.add_column("scenario", style="dim")
    t.add_column("figure")
    t.add_column("broken", justify="right", style="bold red")
    t.add_column("fixed", justify="right", style="bold green")
    variants = snapshot["variants"]
    last = None
    for scenario, label, read in ROWS:
        t.add_row(
            scenario if scenario != last else "",
            label,
            str(read(variants["broken"])),
            str(read(variants["fixed"])),
        )
        last = scenario
    return t


async def run(args: argparse.Namespace) -> int:
    base = args.base_url.rstrip("/")
    console = Console()
    async with aiohttp.ClientSession() as http:
        try:
            snapshot = await fetch_json(http, f"{base}/api/state")
        except (aiohttp.ClientError, TimeoutError) as exc:
            return cannot_reach(base, exc)
        if args.once:
            console.print(table(snapshot, base))
            return 0
        stop_at = time.monotonic() + args.seconds if args.seconds else None
        with Live(table(snapshot, base), console=console, refresh_per_second=4) as live:
            while stop_at is None or time.monotonic() < stop_at:
                await asyncio.sleep(args.every)
                try:
                    live.update(table(await fetch_json(http, f"{base}/api/state"), base))
                except (aiohttp.ClientError, TimeoutError):
                    live.update(f"[red]{base} unreachable; retrying…")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.watch", description=__doc__.split("\n")[0])
    p.add_argument("--base-url", default="http://127.0.0.1:8080")
    p.add_argument("--every", type=float, default=0.5, help="seconds between refreshes")
    p.add_argument("--seconds", type=float, default=0, help="stop after this long (default: until Ctrl-C)")
    p.add_argument("--once", action="store_true", help="print the table once and exit")
    args = p.parse_args(argv)
    require_loopback(args.base_url)
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
