"""Load for scenario ``pubsub``: many event-stream subscribers on one channel, a share of them dropped abruptly,
then messages published through the app.

Invariant: every subscriber is accepted, every publish succeeds, every live subscriber receives every
message in order, and the variant holds at most 2 Redis connections (the hub's and one to publish). Also
measured, for the ladder (``--rung``, ``scripts.ladder``): once every subscriber has left, does a publish
work again, and how many Redis connections does the variant still hold?
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import time
import uuid

import aiohttp

from app.scenarios.pubsub import SCENARIO

from ._common import Progress, Tally, body_of, cannot_reach, fetch_json, finish
from ._sse import SseStream, subscribe
from .toolkit import percentile_ms, poll

DELIVERY_SECONDS = 10.0
MAX_HUB_CONNECTIONS = 2


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--drop-share", type=float, default=0.25, help="share of subscribers dropped abruptly (0..1)")
    p.add_argument("--messages", type=int, default=20, help="messages to publish (1..1000)")
    rungs = [r.name for r in SCENARIO.rungs]
    p.add_argument("--rung", choices=rungs, help="subscribe on this middle step of the ladder (broken only)")


async def run(args: argparse.Namespace) -> int:
    base, variant = args.base_url.rstrip("/"), args.variant
    if args.rung is not None and variant != "broken":
        print("--rung: the ladder's middle steps are served by the broken variant (--variant broken)")
        return 2
    subscribers = args.requests or 200
    channel = f"load-{uuid.uuid4().hex[:8]}"
    stream_url = f"{base}/{variant}/events/{channel}" + (f"/{args.rung}" if args.rung else "")
    rng = random.Random(args.seed)
    tally = Tally(total=subscribers)
    progress = Progress(tally)
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        try:
            await fetch_json(http, f"{base}/{variant}/events/stats")
        except (aiohttp.ClientError, TimeoutError) as exc:
            return cannot_reach(base, exc)

        # 1. Subscribe, C at a time.
        streams: list[SseStream] = []
        pending = iter(range(subscribers))

        async def subscriber() -> None:
            for _ in pending:
                if tally.elapsed > args.max_seconds:
                    tally.errors["not_sent_deadline"] += 1
                    continue
                try:
                    status, result = await subscribe(http, stream_url)
                except (aiohttp.ClientError, TimeoutError, RuntimeError) as exc:
                    tally.errors[f"subscribe_{type(exc).__name__}"] += 1
                else:
                    if isinstance(result, SseStream):
                        streams.append(result)
                        tally.ok += 1
                    else:
                        tally.errors[f"subscribe_{status}_{result.get('detail', result.get('error'))}"] += 1
                tally.done += 1
                progress.update()

        await asyncio.gather(*(subscriber() for _ in range(args.concurrency)))
        progress.update(final=True)

        # 2. Drop a share of them abruptly; wait until the app has noticed.
        rng.shuffle(streams)
        cut = round(len(streams) * args.drop_share)
        for stream in streams[:cut]:
            stream.close()
        tally.disconnects = cut
        live = streams[cut:]
        after_drop = await poll(
            lambda: fetch_json(http, f"{base}/{variant}/events/stats"),
            lambda s: s["subscribers"] == len(live),
            timeout=5,
            every=0.1,
        )

        # 3. Publish, while every live subscriber reads.
        readers = [asyncio.create_task(_read(stream, args.messages)) for stream in live]
        published: list[int] = []
        for seq in range(args.messages):
            body = {"data": json.dumps({"seq": seq, "t": time.time()})}
            try:
                async with http.post(f"{base}/{variant}/events/{channel}", json=body) as resp:
                    payload = await body_of(resp)
                    if resp.status == 202:
                        published.append(seq)
                    else:
                        tally.errors[f"publish_{resp.status}_{payload.get('detail', payload.get('error'))}"] += 1
            except aiohttp.ClientError as exc:
                tally.errors[f"publish_{type(exc).__name__}"] += 1
        done, late = await asyncio.wait(readers, timeout=DELIVERY_SECONDS) if readers else (set(), set())
        for task in late:
            task.cancel()
        received = [task.result() if task in done else ([], []) for task in readers]
        for stream in live:
            stream.close()
        figures = await fetch_json(http, f"{base}/{variant}/events/stats")

        # 4. Every subscriber has left: does the variant work again?
        left = await poll(
            lambda: fetch_json(http, f"{base}/{variant}/events/stats"),
            lambda s: s["subscribers"] == 0,
            timeout=5,
            every=0.1,
        )
        async with http.post(f"{base}/{variant}/events/{channel}", json={"data": "after"}) as resp:
            publish_after = resp.status

    missed = sum(len(published) - _in_order_prefix(seqs, published) for seqs, _ in received)
    latencies = sorted(lat for _, lats in received for lat in lats)
    observed = {
        "subscribers_refused": sum(v for k, v in tally.errors.items() if k.startswith("subscribe_")),
        "publishes_failed": sum(v for k, v in tally.errors.items() if k.startswith("publish_")),
        "messages_missed": missed,
        "redis_connections_in_use": after_drop["redis_connections_in_use"],
    }
    held = observed["redis_connections_in_use"] <= MAX_HUB_CONNECTIONS and all(
        observed[k] == 0 for k in ("subscribers_refused", "publishes_failed", "messages_missed")
    )
    verdict = "unexpected" if tally.done == 0 else ("held" if held else "reproduced")
    extra = {
        "subscribers_live": len(live),
        "messages_published": len(published),
        "deliveries": len(latencies),
        "delivery_p50_ms": percentile_ms(latencies, 50, 1),
        "delivery_p99_ms": percentile_ms(latencies, 99, 1),
        "redis_max_connections": figures["redis_max_connections"],
        "rung": args.rung,
        "after_they_left": {
            "publish_status": publish_after,
            "redis_connections_in_use": left["redis_connections_in_use"],
        },
    }
    print(
        f"pubsub/{variant}: {tally.ok} of {subscribers} subscribers accepted, {cut} dropped, "
        f"{len(published)} of {args.messages} messages published, {len(latencies)} deliveries "
        f"(p50 {extra['delivery_p50_ms']} ms, p99 {extra['delivery_p99_ms']} ms), "
        f"Redis connections in use {observed['redis_connections_in_use']} of {figures['redis_max_connections']}"
    )
    print(
        f"after every subscriber left: a publish answered {publish_after}, "
        f"{left['redis_connections_in_use']} Redis connections still in use"
    )
    return finish(
        scenario="pubsub",
        variant=variant,
        tally=tally,
        invariant={
            "name": "every subscriber served on at most 2 Redis connections, every message to every live one",
            "expected": {
                "subscribers_refused": 0,
                "publishes_failed": 0,
                "messages_missed": 0,
                "redis_connections_in_use": f"<= {MAX_HUB_CONNECTIONS}",
            },
            "observed": observed,
        },
        verdict=verdict,
        json_path=args.json,
        extra=extra,
    )


async def _read(stream: SseStream, n: int) -> tuple[list[int], list[float]]:
    """Sequence numbers received, in arrival order, and each one's delivery latency in seconds."""
    seqs: list[int] = []
    latencies: list[float] = []
    with contextlib.suppress(asyncio.CancelledError):
        while len(seqs) < n:
            event = await stream.next()
            if event.kind in ("eof", "cut"):
                break
            if event.kind == "message":
                data = json.loads(event.data)
                latencies.append(time.time() - data["t"])
                seqs.append(data["seq"])
    return seqs, latencies


def _in_order_prefix(seqs: list[int], published: list[int]) -> int:
    """How many of the published messages arrived, in order, with nothing else in between."""
    n = 0
    for got, want in zip(seqs, published, strict=False):
        if got != want:
            break
        n += 1
    return n
