"""Load for scenario ``disconnect``: orders and slow reports, a share of them hung up mid-request.

A hung-up order is dropped at a random moment of its ``hold`` (the slow step inside the write); a hung-up
report is a slow one (``--report-seconds``) that the client gives up on after 0.05..1 s, as people do.
Afterwards it waits for the variant to go quiet and reads back the stats and the role's server backends.
Invariant: no order without items, no request refused by Postgres, no backend still running for a client
that is gone. Also counted, for the ladder (``--rung``, ``scripts.ladder``): what became of the orders whose
client hung up — landed whole, half-written, or gone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import uuid
from collections import Counter
from typing import Any

import aiohttp

from app.scenarios.disconnect import SCENARIO
from app.state import VariantState

from ._common import Progress, Tally, body_of, cannot_reach, fetch_json, finish, variant_state
from .toolkit import quiet

QUIET_SECONDS = 5.0
SAMPLE_EVERY = 0.1


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--disconnect-share", type=float, default=0.5, help="share of requests hung up (0..1)")
    p.add_argument("--report-share", type=float, default=0.25, help="share of requests that are reports")
    p.add_argument("--report-seconds", type=float, default=10, help="length of an abandoned report (<=30)")
    p.add_argument("--hold", type=float, default=0.2, help="the order's slow step, seconds (<=5)")
    rungs = [r.name for r in SCENARIO.rungs]
    p.add_argument("--rung", choices=rungs, help="orders go to this middle step of the ladder (broken only)")


async def run(args: argparse.Namespace) -> int:
    base, variant = args.base_url.rstrip("/"), args.variant
    if args.rung is not None and variant != "broken":
        print("--rung: the ladder's middle steps are served by the broken variant (--variant broken)")
        return 2
    rung = next((r for r in SCENARIO.rungs if r.name == args.rung), None)
    args.orders_path = rung.path if rung is not None else "/orders"
    args.customers = f"load-{uuid.uuid4().hex[:8]}-"  # this run's orders, told apart from any other's
    outcomes: Counter[str] = Counter()
    rng = random.Random(args.seed)
    tally = Tally(total=args.requests)
    progress = Progress(tally)
    connector = aiohttp.TCPConnector(limit=0, force_close=True)  # one connection per request: hang-ups are real
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=40)) as http:
        try:
            before = await fetch_json(http, f"{base}/{variant}/orders/stats")
            state = await variant_state(http, base, variant)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return cannot_reach(base, exc)
        cancelled_before = state["handlers_cancelled"]
        pool_max = state["postgres"]["pool_max"]
        peak = {"backends": 0}

        async def sample() -> None:
            while True:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, KeyError):
                    pg = (await variant_state(http, base, variant))["postgres"]
                    peak["backends"] = max(peak["backends"], pg["backends"] or 0)
                    tally.gauges.update(backends=pg["backends"], peak=peak["backends"], pool=pg["pool_size"])
                progress.update()
                await asyncio.sleep(SAMPLE_EVERY)

        sampler = asyncio.create_task(sample())
        next_index = iter(range(args.requests))

        async def worker() -> None:
            for i in next_index:
                if tally.elapsed > args.max_seconds:
                    tally.errors["not_sent_deadline"] += 1
                    continue
                await _one(http, base, variant, i, rng, args, tally, outcomes)
                tally.done += 1

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        orphaned, quiet_state = await _wait_quiet(http, base, variant)
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        progress.update(final=True)
        after = await fetch_json(http, f"{base}/{variant}/orders/stats")
        ours = await fetch_json(http, f"{base}/{variant}/orders/stats?customer_prefix={args.customers}")

    observed = {
        "orders_without_items": after["orders_without_items"] - before["orders_without_items"],
        "refused_requests": tally.errors["refused"],
        "orphaned_backends": orphaned,
    }
    invariant = {
        "name": "orders whole, no request refused, no backend left running for a client that is gone",
        "expected": {key: 0 for key in observed},
        "observed": observed,
    }
    if tally.disconnects == 0 or tally.ok == 0:
        verdict = "unexpected"  # nothing was hung up, or nothing got through: the run shows nothing
    else:
        verdict = "held" if all(v == 0 for v in observed.values()) else "reproduced"
    # The orders whose client hung up: every answered one landed whole, so the rest of the whole ones are theirs.
    half = ours["orders_without_items"]
    landed = max(0, ours["orders"] - half - outcomes["answered"])
    hung_up = {
        "hung_up": outcomes["hung_up"],
        "landed_whole": landed,
        "half_written": half,
        "gone": max(0, outcomes["hung_up"] - landed - half),
    }
    print(
        f"orders hung up: {hung_up['hung_up']}; of those {landed} landed whole, {half} half-written, "
        f"{hung_up['gone']} gone (rolled back, or hung up before the write began)"
    )
    print(
        f"disconnect/{variant}{'/' + args.rung if args.rung else ''}: {tally.done} requests, "
        f"{tally.disconnects} hung up, "
        f"{after['orders'] - before['orders']} orders written, peak backends {peak['backends']} "
        f"(pool max {pool_max}, role limit {quiet_state['postgres']['role_connection_limit']}), "
        f"handlers cancelled {quiet_state['handlers_cancelled'] - cancelled_before}"
    )
    return finish(
        scenario="disconnect",
        variant=variant,
        tally=tally,
        invariant=invariant,
        verdict=verdict,
        json_path=args.json,
        extra={
            "peak_backends": peak["backends"],
            "pool_max": pool_max,
            "role_connection_limit": quiet_state["postgres"]["role_connection_limit"],
            "orders_written": after["orders"] - before["orders"],
            "handlers_cancelled": quiet_state["handlers_cancelled"] - cancelled_before,
            "rung": args.rung,
            "hung_up_orders": hung_up,
        },
    )


async def _one(
    http: aiohttp.ClientSession,
    base: str,
    variant: str,
    i: int,
    rng: random.Random,
    args: argparse.Namespace,
    tally: Tally,
    outcomes: Counter[str],
) -> None:
    hang_up = rng.random() < args.disconnect_share
    body: dict[str, Any] | None = None
    if rng.random() < args.report_share:
        seconds = args.report_seconds if hang_up else 0.05
        method, url, patience = "GET", f"{base}/{variant}/reports/slow?seconds={seconds}", rng.uniform(0.05, 1.0)
    else:
        items = [{"sku": f"sku-{k}", "qty": rng.randint(1, 5)} for k in range(rng.randint(1, 5))]
        body = {"customer": f"{args.customers}{i}", "items": items}
        method, url, patience = (
            "POST",
            f"{base}/{variant}{args.orders_path}?hold={args.hold}",
            rng.uniform(0, 1.5 * args.hold),
        )
    deadline = asyncio.timeout(patience if hang_up else None)
    try:
        async with deadline, http.request(method, url, json=body) as resp:
            payload = await body_of(resp)
    except TimeoutError:
        if deadline.expired():
            tally.disconnects += 1  # we hung up: the connection is closed mid-request
            outcomes["hung_up"] += body is not None
        else:
            tally.errors["timeout"] += 1
        return
    except aiohttp.ClientError as exc:
        tally.errors[type(exc).__name__] += 1
        return
    if resp.status < 400:
        tally.ok += 1
        outcomes["answered"] += body is not None
    elif resp.status == 503 and "too many" in str(payload.get("detail", "")):
        tally.errors["refused"] += 1
    else:
        tally.errors[f"http_{resp.status}"] += 1


async def _wait_quiet(http: aiohttp.ClientSession, base: str, variant: str) -> tuple[int, VariantState]:
    """Poll until no handler or job of the variant holds a connection and no backend is busy, or give up after
    a bound; returns the backends still busy then (each running a query nobody waits for) and the last state."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + QUIET_SECONDS
    while True:
        state = await variant_state(http, base, variant)
        pg = state["postgres"]
        busy = pg["backends_active"] or 0
        idle = quiet(state)
        if (idle and busy == 0) or loop.time() > give_up:
            return (busy if idle else busy - pg["pool_in_use"]), state
        await asyncio.sleep(SAMPLE_EVERY)
