"""The dashboard's figures, live in the terminal (for when there is no browser).

python -m scripts.watch [--base-url URL] [--every 0.5] [--seconds N | --once]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import cast

import aiohttp
from rich.console import Console
from rich.live import Live
from rich.table import Table

from app.settings import VARIANTS
from app.state import Snapshot

from ._common import cannot_reach, fetch_json, require_loopback

STYLE = {"broken": "bold red", "fixed": "bold green"}


def table(snapshot: Snapshot, base: str) -> Table:
    """Each scenario's card (its figures, as the dashboard shows them) with a column per variant."""
    t = Table(title=f"asyncio pitfalls — {base}", title_style="bold", expand=False)
    t.add_column("scenario", style="dim")
    t.add_column("figure")
    for variant in VARIANTS:
        t.add_column(variant, justify="right", style=STYLE.get(variant, "bold"))
    for scenario, card in snapshot["cards"].items():
        figures = {variant: card[variant]["figures"] for variant in VARIANTS}
        for i, (label, _) in enumerate(figures[VARIANTS[0]]):
            t.add_row(scenario if i == 0 else "", label, *(figures[v][i][1] for v in VARIANTS))
    return t


async def run(args: argparse.Namespace) -> int:
    base = args.base_url.rstrip("/")
    console = Console()
    async with aiohttp.ClientSession() as http:
        try:
            snapshot = cast(Snapshot, await fetch_json(http, f"{base}/api/state"))
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
                    live.update(table(cast(Snapshot, await fetch_json(http, f"{base}/api/state")), base))
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
