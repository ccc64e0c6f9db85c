"""Soak: every fixed scenario at a steady rate, with disconnects, for N minutes; then the drift.

    python -m scripts.soak --minutes N [--base-url URL] [--rate R] [--json PATH]

Every second it sends R orders (a third hung up mid-hold), R/2 transfers, R/4 abandoned slow reports, opens and
drops event streams and publishes to them. Every few seconds it samples the app process (its pid comes from
``/api/state``; same machine): resident memory, open file descriptors, the fixed pool, its Postgres backends,
Redis connections, jobs. Verdict ``held`` when nothing grows: memory within +25 % (after the warm-up fifth),
file descriptors within +20, backends and Redis connections back to their bounds, every acknowledged order
whole, no transfer lost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from app.state import VariantState

from ._common import cannot_reach, fetch_json, require_loopback, variant_state
from ._sse import subscribe
from .toolkit import poll, quiet

ITEMS = [{"sku": "tea", "qty": 1}]


def sample(pid: int, state: VariantState) -> dict[str, Any]:
    rss = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    return {
        "rss_kib": rss,
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "pool_size": state["postgres"]["pool_size"],
        "backends": state["postgres"]["backends"],
        "redis_connections": state["redis"]["connections_in_use"],
        "jobs": state["jobs"]["active"] + state["jobs"]["pending"],
        "subscribers": state["subscribers"],
    }


async def run(args: argparse.Namespace) -> int:
    base, rng = args.base_url.rstrip("/"), random.Random(args.seed)
    stop = time.monotonic() + args.minutes * 60
    samples: list[dict[str, Any]] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True)) as http:
        try:
            pid = (await fetch_json(http, f"{base}/api/state"))["pid"]
            before = await fetch_json(http, f"{base}/fixed/transfers/stats")
        except (aiohttp.ClientError, TimeoutError, KeyError) as exc:
            return cannot_reach(base, exc)

        async def maybe_hang_up(method: str, path: str, body: Any, patience: float | None) -> None:
            try:
                async with asyncio.timeout(patience), http.request(method, base + path, json=body) as resp:
                    await resp.read()
            except (TimeoutError, aiohttp.ClientError):
                pass

        async def tick() -> None:
            work = []
            for i in range(args.rate):
                hang = rng.uniform(0, 0.1) if i % 3 == 0 else None
                work.append(
                    maybe_hang_up("POST", "/fixed/orders?hold=0.05", {"customer": "soak", "items": ITEMS}, hang)
                )
            for _ in range(max(1, args.rate // 2)):
                body = (
                    {"from": "alice", "to": "bob", "amount": 1}
                    if rng.random() < 0.5
                    else {"from": "bob", "to": "alice", "amount": 1}
                )
                work.append(maybe_hang_up("POST", "/fixed/transfers?hold=0.05", body, rng.uniform(0, 0.05)))
            for _ in range(max(1, args.rate // 4)):
                work.append(maybe_hang_up("GET", "/fixed/reports/slow?seconds=5", None, 0.2))
            work.append(churn_streams())
            await asyncio.gather(*work)

        async def churn_streams() -> None:
            channel = f"/fixed/events/soak-{rng.randrange(4)}"
            opened = [await subscribe(http, base + channel) for _ in range(3)]
            streams = [s for status, s in opened if status == 200]
            async with http.post(base + channel, json={"data": "tick"}) as resp:
                await resp.read()
            for s in streams:
                async with asyncio.timeout(5):  # not wait_for: the pitfall this project teaches
                    await s.messages(1)
                s.close()

        next_sample = 0.0
        while time.monotonic() < stop:
            started = time.monotonic()
            await tick()
            if started >= next_sample:
                samples.append(
                    {
                        "t": round(args.minutes * 60 - (stop - started), 1),
                        **sample(pid, await variant_state(http, base, "fixed")),
                    }
                )
                print(json.dumps(samples[-1]), file=sys.stderr, flush=True)
                next_sample = started + args.sample_every
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
        # quiet, then the last sample and the invariants
        state = await poll(lambda: variant_state(http, base, "fixed"), quiet, timeout=10, every=0.1)
        samples.append({"t": "end", **sample(pid, state)})
        orders = await fetch_json(http, f"{base}/fixed/orders/stats")
        after = await fetch_json(http, f"{base}/fixed/transfers/stats")

    warm = samples[max(1, len(samples) // 5)] if len(samples) > 2 else samples[0]
    last = samples[-1]
    drift = {
        "rss_percent": round(100 * (last["rss_kib"] - warm["rss_kib"]) / warm["rss_kib"], 1),
        "fds": last["fds"] - warm["fds"],
        "backends_end": last["backends"],
        "redis_connections_end": last["redis_connections"],
        "orders_without_items": orders["orders_without_items"],
        "transfers_lost": after["lost"] - before["lost"],
    }
    pool_max = state["postgres"]["pool_max"]
    held = (
        drift["rss_percent"] <= 25
        and drift["fds"] <= 20
        and (drift["backends_end"] or 0) <= pool_max
        and drift["redis_connections_end"] <= 2
        and drift["orders_without_items"] == 0
        and drift["transfers_lost"] == 0
    )
    verdict = "held" if held else "reproduced"
    print(f"soak: {args.minutes:g} min, {len(samples)} samples; drift {json.dumps(drift)}")
    print(f"VERDICT: {verdict}")
    if args.json:
        args.json.write_text(
            json.dumps({"minutes": args.minutes, "drift": drift, "samples": samples, "verdict": verdict}, indent=2)
            + "\n"
        )
    return 0 if held else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.soak", description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, required=True, help="how long (at most 60)")
    p.add_argument("--base-url", default="http://127.0.0.1:8080")
    p.add_argument("--rate", type=int, default=20, help="orders per second (the rest scale with it; max 200)")
    p.add_argument("--sample-every", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if not 0 < args.minutes <= 60 or not 1 <= args.rate <= 200:
        p.error("--minutes in (0, 60], --rate in 1..200")
    require_loopback(args.base_url)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
