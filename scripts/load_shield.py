"""Load for scenario ``shield``: transfers accepted (202) under load, some clients hanging up, and — with
``--spawn-app`` — the server stopped mid-load (SIGTERM, or SIGKILL with ``--kill``) and started again.

With ``--spawn-app`` the script runs the app itself as a child process on a free loopback port (against the
``DATABASE_URL`` / ``REDIS_URL`` of its environment), so it can signal and restart it. After the restart it
waits for the variant to go quiet and reads the stats. Invariant: every accepted transfer committed (none
lost), none failed, and the money in the variant's accounts unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

from ._common import Progress, Tally, cannot_reach, fetch_json, finish, variant_state
from .toolkit import ACCOUNTS, AppProcess, poll, quiet

BAD_LOG_LINES = ("Task was destroyed but it is pending", "never retrieved")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spawn-app", action="store_true", help="run the app as a child, stop it mid-load, restart it")
    p.add_argument("--kill", action="store_true", help="with --spawn-app: SIGKILL instead of SIGTERM")
    p.add_argument("--stop-after", type=float, default=0.5, help="stop the app after this share was accepted")
    p.add_argument("--disconnect-share", type=float, default=0.3, help="share of clients hanging up (0..1)")
    p.add_argument("--hold", type=float, default=0.2, help="slow step inside each transfer, seconds (<=5)")


async def start_app(log: Path) -> AppProcess:
    """The app as a child on a free port (healthy, or SystemExit pointing at its log)."""
    try:
        return await asyncio.to_thread(AppProcess(log).start)
    except RuntimeError as exc:
        raise SystemExit(f"{exc}; see {log}") from None


async def stop_app(app: AppProcess, sig: int) -> float:
    return await asyncio.to_thread(app.stop, sig, 60)


async def run(args: argparse.Namespace) -> int:
    variant, rng = args.variant, random.Random(args.seed)
    tally = Tally(total=args.requests)
    progress = Progress(tally)
    extra: dict[str, Any] = {
        "mode": "spawn-app " + ("SIGKILL" if args.kill else "SIGTERM") if args.spawn_app else "disconnects only"
    }
    log = Path(tempfile.mkdtemp(prefix="pitfalls-shield-")) / "app.log"
    child: AppProcess | None = None
    if args.spawn_app:
        await asyncio.to_thread(AppProcess(None).migrate)
        child = await start_app(log)
        base = child.base
    else:
        base = args.base_url.rstrip("/")
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as http:
        try:
            before = await fetch_json(http, f"{base}/{variant}/transfers/stats")
        except (aiohttp.ClientError, TimeoutError) as exc:
            return cannot_reach(base, exc)
        accepted = 0
        stop_at = max(1, int(args.requests * args.stop_after)) if child is not None else None
        stopping = asyncio.Event()
        pending = iter(range(args.requests))

        async def worker() -> None:
            nonlocal accepted
            for _ in pending:
                if stopping.is_set() or tally.elapsed > args.max_seconds:
                    if stopping.is_set():
                        tally.expected["not sent: the app was stopping"] += 1
                    else:
                        tally.errors["not_sent_deadline"] += 1
                    continue
                source, target = rng.sample(ACCOUNTS, 2)
                body = {"from": source, "to": target, "amount": rng.randint(1, 1000)}
                hang_up = rng.random() < args.disconnect_share
                deadline = asyncio.timeout(rng.uniform(0, 0.05) if hang_up else None)
                try:
                    async with deadline, http.post(f"{base}/{variant}/transfers?hold={args.hold}", json=body) as r:
                        if r.status == 202:
                            accepted += 1
                            tally.ok += 1
                        else:
                            tally.errors[f"http_{r.status}"] += 1
                except TimeoutError:
                    if deadline.expired():
                        tally.disconnects += 1
                    else:
                        tally.errors["timeout"] += 1
                except aiohttp.ClientError as exc:
                    tally.errors["app_stopped" if stopping.is_set() else type(exc).__name__] += 1
                tally.done += 1
                progress.update()
                if stop_at is not None and accepted >= stop_at and not stopping.is_set():
                    stopping.set()

        async def stopper() -> None:
            if child is None:
                return
            await stopping.wait()
            took = await stop_app(child, signal.SIGKILL if args.kill else signal.SIGTERM)
            extra["stop_seconds"] = round(took, 2)
            print(f"\n{'SIGKILL' if args.kill else 'SIGTERM'}: the app stopped in {took:.2f} s; restarting it")

        workers = asyncio.gather(*(worker() for _ in range(args.concurrency)))
        await asyncio.gather(workers, stopper())
        progress.update(final=True)
        if child is not None:
            first_log = log.read_text()
            extra["log_warnings"] = {line: first_log.count(line) for line in BAD_LOG_LINES}
            child = await start_app(log)
            base = child.base
        # Quiet: no job queued or running, no connection in use (recovery, if any, runs at start-up).
        await poll(lambda: variant_state(http, base, variant), quiet, timeout=30, every=0.1)
        after = await fetch_json(http, f"{base}/{variant}/transfers/stats")
        if child is not None:
            extra["restart_stop_seconds"] = round(await stop_app(child, signal.SIGTERM), 2)
    extra["log"] = str(log)

    observed = {
        "lost": after["lost"] - before["lost"],
        "failed": after["failed"] - before["failed"],
        "balance_change": after["balance_total"] - before["balance_total"],
    }
    extra.update(
        accepted=after["accepted"] - before["accepted"], committed=after["committed"] - before["committed"]
    )
    verdict = "unexpected" if extra["accepted"] == 0 else ("held" if not any(observed.values()) else "reproduced")
    print(
        f"shield/{variant} ({extra['mode']}): {extra['accepted']} transfers accepted, {extra['committed']} "
        f"committed, {tally.disconnects} clients hung up"
        + (f"; stop took {extra['stop_seconds']} s" if "stop_seconds" in extra else "")
    )
    if variant == "broken" and not args.spawn_app and verdict == "held":
        print("(a bare task survives a hang-up: broken loses transfers when the server stops; add --spawn-app)")
    return finish(
        scenario="shield",
        variant=variant,
        tally=tally,
        invariant={
            "name": "every accepted transfer committed once, the money unchanged",
            "expected": {key: 0 for key in observed},
            "observed": observed,
        },
        verdict=verdict,
        json_path=args.json,
        extra=extra,
    )
