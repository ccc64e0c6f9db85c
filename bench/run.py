"""``python -m bench.run [--smoke] [--only NAME,...] [--out DIR]``: every benchmark, side by side in one run.

Writes ``DIR/results/<name>.json``, charts ``DIR/results/*.png`` and ``DIR/RESULTS.md`` (DIR: ``bench/``).
``--smoke`` runs every benchmark with tiny sizes (under a minute) — ``make test`` does, to keep them working.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp

from app.settings import VARIANTS, Settings
from app.state import Snapshot, VariantState
from scripts import toolkit
from scripts._sse import subscribe
from scripts.toolkit import ROOT, percentile_ms, poll, quiet

from . import drivers, report
from .harness import WRK_MISSING, BenchApp, Measured, Peer, closed_loop, spread, tool, wrk
from .instructions import instructions

ITEMS = [{"sku": "tea", "qty": 2}, {"sku": "cup", "qty": 1}, {"sku": "pot", "qty": 1}]


@dataclass(frozen=True)
class Config:
    smoke: bool
    seconds: float
    reps: int
    concurrency: int
    fanout: tuple[int, ...]
    messages: int
    storm_seconds: float

    @classmethod
    def make(cls, smoke: bool) -> Config:
        if smoke:
            return cls(True, 0.5, 1, 8, (10, 50), 5, 2.0)
        # 5 rounds: with 3, one slow round of a Python process on this shared machine (a wrk run of the same
        # app moves by 20 % from one round to the next) set the median of a ratio
        return cls(False, 5.0, 5, 20, (100, 1000, 3000, 5000), 20, 8.0)


def state(app: BenchApp, variant: str) -> VariantState:
    with urllib.request.urlopen(f"{app.base}/api/state", timeout=10) as resp:
        return cast(Snapshot, json.load(resp))["variants"][variant]


def get(app: Measured, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{app.base}{path}", timeout=10) as resp:
        data: dict[str, Any] = json.load(resp)
        return data


async def wait_quiet(app: BenchApp, variant: str, timeout: float = 60) -> float:
    started = time.monotonic()
    await poll(lambda: asyncio.to_thread(state, app, variant), quiet, timeout=timeout)
    return time.monotonic() - started


# --- 1. the price of each fix ---------------------------------------------------------------------------------


async def price_of_fix(app: BenchApp, cfg: Config) -> dict[str, Any]:
    base = app.base
    makers = {
        "orders": lambda v: lambda i: ("POST", f"{base}/{v}/orders?hold=0", {"customer": f"b{i}", "items": ITEMS}),
        "transfers": lambda v: (
            lambda i: (
                "POST",
                f"{base}/{v}/transfers?hold=0",
                {"from": ("alice", "bob")[i % 2], "to": ("bob", "alice")[i % 2], "amount": 1},
            )
        ),
    }
    out: dict[str, Any] = {}
    for case, make in makers.items():
        runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
        for _ in range(cfg.reps):
            for variant in VARIANTS:  # interleaved: drift hits both alike
                await asyncio.to_thread(app.reset)
                run = await closed_loop(make(variant), concurrency=cfg.concurrency, seconds=cfg.seconds)
                drain = await wait_quiet(app, variant)
                figures = run.summary()
                url = f"{base}/{variant}/{case}?hold=0"
                by_wrk = await asyncio.to_thread(wrk, url, case, connections=10, seconds=cfg.seconds)
                figures["wrk_rps"] = by_wrk["ok_rps"] if by_wrk else None  # 2xx only: a 503 is no transfer
                figures["wrk_errors"] = by_wrk["errors"] if by_wrk else None
                await wait_quiet(app, variant)
                if case == "transfers":
                    committed = (await asyncio.to_thread(get, app, f"/{variant}/transfers/stats"))["committed"]
                    figures["committed_per_s"] = round(committed / (run.seconds + drain), 1)
                runs[variant].append(figures)
        out[case] = _compare(runs)
    out["pubsub"] = await pubsub_price(app, cfg)
    return out


def _compare(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for variant, figures in runs.items():
        result[variant] = {
            key: spread([f[key] for f in figures if f[key] is not None])
            for key in figures[0]
            if key != "errors" and any(f[key] is not None for f in figures)
        }
        result[variant]["errors"] = sum(f["errors"] for f in figures)
    b, f = result["broken"]["rps"]["median"], result["fixed"]["rps"]["median"]
    result["ratio_fixed_to_broken"] = round(f / b, 3) if b else None
    if "wrk_rps" in result["broken"] and "wrk_rps" in result["fixed"]:
        b, f = result["broken"]["wrk_rps"]["median"], result["fixed"]["wrk_rps"]["median"]
        result["ratio_fixed_to_broken_wrk"] = round(f / b, 3) if b else None
    return result


async def pubsub_price(app: BenchApp, cfg: Config) -> dict[str, Any]:
    """10 subscribers per variant (broken has 20 connections), publish→deliver as fast as publishes go."""
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    n_messages = cfg.messages * 10
    for _ in range(cfg.reps):
        for variant in VARIANTS:
            await asyncio.to_thread(app.reset)
            figures = await _fan_out_once(app, variant, subscribers=10, messages=n_messages)
            runs[variant].append(
                {
                    "rps": figures["deliveries_per_s"],
                    "p50_ms": figures["p50_ms"],
                    "p99_ms": figures["p99_ms"],
                    "errors": figures["missed"],
                }
            )
    return _compare(runs)


async def _fan_out_once(
    app: Measured, variant: str, *, subscribers: int, messages: int, rate: float | None = None
) -> dict[str, Any]:
    """``messages`` published to ``subscribers`` streams: one after the other, each as soon as the last was
    answered (the server's pace: saturation); or, with ``rate``, on a clock at ``rate`` messages a second,
    whatever the answers (open loop: latency at a load the server can carry)."""
    channel = f"bench-{os.urandom(4).hex()}"
    url = f"{app.base}/{variant}/events/{channel}"
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as http:
        sem = asyncio.Semaphore(50)

        async def one() -> Any:
            async with sem:
                return await subscribe(http, url)

        opened = await asyncio.gather(*(one() for _ in range(subscribers)))
        streams = [s for status, s in opened if status == 200]
        rss = await asyncio.to_thread(app.rss_kib)
        in_use = (await asyncio.to_thread(get, app, f"/{variant}/events/stats"))["redis_connections_in_use"]
        by_message: dict[float, list[float]] = defaultdict(list)  # latencies, by the time each was published
        last = [0.0]

        async def read(stream: Any) -> int:
            # What arrived, split into events by hand (a message is ``data: <time published>``): the readers
            # share the 2 cores with the server, and an event parsed line by line, its data by json, cost them
            # about as much CPU as the server spent delivering it (section 4's p99 measured the readers).
            got, buffer, content = 0, b"", stream.response.content
            while got < messages:
                try:
                    chunk = await content.readany()
                except aiohttp.ClientPayloadError:
                    break
                if not chunk:
                    break
                now = time.time()
                *events, buffer = (buffer + chunk).split(b"\n\n")
                for event in events:
                    if event.startswith(b"data: "):
                        stamp = float(event[6:])
                        by_message[stamp].append(now - stamp)
                        got += 1
                last[0] = time.perf_counter()
            return got

        async def publish() -> None:
            async with http.post(url, json={"data": repr(time.time())}) as resp:
                await resp.read()

        readers = [asyncio.create_task(read(s)) for s in streams]
        cpu_before = await asyncio.to_thread(app.cpu_seconds)
        # No collections in the readers meanwhile: a full one over 5,000 streams' objects stopped every reader
        # for ~100 ms, and the delay showed as the server's.
        gc.disable()
        try:
            started = time.perf_counter()
            published = []
            for i in range(messages):
                if rate is None:
                    await publish()
                else:
                    await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
                    published.append(asyncio.create_task(publish()))
            async with asyncio.timeout(60):
                await asyncio.gather(*published)
                got = await asyncio.gather(*readers)
        finally:
            gc.enable()
        cpu = await asyncio.to_thread(app.cpu_seconds) - cpu_before
        for stream in streams:
            stream.close()
    elapsed = max(last[0] - started, 1e-9)
    latencies = [latency for each in by_message.values() for latency in each]
    each_p99 = sorted(p for each in by_message.values() if (p := percentile_ms(each, 99)) is not None)
    return {
        "subscribers": len(streams),
        "deliveries": len(latencies),
        "deliveries_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": percentile_ms(latencies, 50),
        "p99_ms": percentile_ms(latencies, 99),
        "message_p99_ms_median": each_p99[len(each_p99) // 2] if each_p99 else None,  # a message's p99: typical
        "message_p99_ms_max": each_p99[-1] if each_p99 else None,  # and the worst message's
        "missed": len(streams) * messages - sum(got),
        "cpu_us_per_delivery": round(1e6 * cpu / max(len(latencies), 1), 1),
        "rss_kib": rss,
        "redis_connections_in_use": in_use,
    }


# --- 2. distance to the database's own limit, and the profile --------------------------------------------------


PGBENCH_SCRIPT = """BEGIN;
INSERT INTO orders (variant, customer) VALUES ('fixed', 'pgbench');
INSERT INTO order_items (order_id, sku, qty) SELECT currval('orders_id_seq'), sku, qty
  FROM (VALUES ('tea', 2), ('cup', 1), ('pot', 1)) AS t(sku, qty);
COMMIT;
"""


async def database_limit(app: BenchApp, cfg: Config, database_url: str) -> dict[str, Any]:
    make = lambda i: ("POST", f"{app.base}/fixed/orders?hold=0", {"customer": f"b{i}", "items": ITEMS})  # noqa: E731
    app_runs, wrk_runs, pg_runs = [], [], []
    for _ in range(cfg.reps):
        await asyncio.to_thread(app.reset)
        app_runs.append((await closed_loop(make, concurrency=cfg.concurrency, seconds=cfg.seconds)).rps)
        by_wrk = await asyncio.to_thread(
            wrk, f"{app.base}/fixed/orders?hold=0", "orders", connections=10, seconds=cfg.seconds
        )
        if by_wrk is not None:
            wrk_runs.append(by_wrk["ok_rps"])
        pg_runs.append(await asyncio.to_thread(_pgbench, database_url, cfg.seconds))
    profile = await _profile(app, make, cfg)
    a, p = statistics.median(app_runs), statistics.median(pg_runs)
    result: dict[str, Any] = {
        "app_orders_per_s": spread(app_runs),
        "pgbench_tps": spread(pg_runs),
        "ratio_app_to_pgbench": round(a / p, 3) if p else None,
        "connections": 10,
        "profile": profile,
    }
    if wrk_runs:
        result["app_orders_per_s_wrk"] = spread(wrk_runs)
        result["ratio_app_wrk_to_pgbench"] = round(statistics.median(wrk_runs) / p, 3) if p else None
    else:
        result["wrk"] = WRK_MISSING
        print(WRK_MISSING, flush=True)
    return result


def _pgbench(database_url: str, seconds: float) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write(PGBENCH_SCRIPT)
    parts = urllib.parse.urlsplit(database_url)
    run = subprocess.run(
        [
            "pgbench",
            "-n",
            "-c",
            "10",
            "-j",
            "2",
            "-T",
            str(max(1, int(seconds))),
            "-f",
            script.name,
            "-h",
            parts.hostname or "127.0.0.1",
            "-p",
            str(parts.port or 5432),
            "-U",
            parts.username or "postgres",
            parts.path.lstrip("/"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    os.unlink(script.name)
    match = re.search(r"tps = ([\d.]+)", run.stdout)
    return round(float(match.group(1)), 1) if match else 0.0


async def _profile(app: BenchApp, make: Any, cfg: Config) -> dict[str, Any]:
    """py-spy samples the app while the fixed orders load runs: where its CPU goes, by leaf function and by
    package (what is ours, what is the driver's, the web framework's, the event loop's)."""
    spy = tool("py-spy") or tool(str(ROOT / ".venv" / "bin" / "py-spy"))
    if spy is None:
        return {"error": "py-spy not installed"}
    out = Path(tempfile.mkdtemp()) / "profile.txt"
    seconds = max(1, int(cfg.seconds))
    recorder = await asyncio.create_subprocess_exec(
        spy,
        "record",
        "--pid",
        str(app.pid),
        "--duration",
        str(seconds),
        "--format",
        "raw",
        "--output",
        str(out),
        "--nonblocking",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await closed_loop(make, concurrency=cfg.concurrency, seconds=seconds + 0.5)
    await recorder.wait()
    if not out.exists():
        return {"error": "py-spy could not sample (ptrace not permitted?)"}
    leaves: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for frames, n in _stacks(out):
        total += n
        leaf = frames[-1]
        leaves[leaf] += n
        packages[_package(leaf)] += n
    return {
        "samples": total,
        "top_leaf_functions": [(name, round(100 * n / total, 1)) for name, n in leaves.most_common(12)],
        "by_package_percent": {name: round(100 * n / total, 1) for name, n in packages.most_common()},
        "native": await _native_profile(app, spy, seconds),
    }


async def _native_profile(app: BenchApp, spy: str, seconds: int) -> dict[str, Any]:
    """What the Python profile's top line (aiopg's ``Cursor.execute``, psycopg2's C ``execute``) really is:
    py-spy with ``--native`` under wrk's load, leaves named down to libc (``send`` is the syscall)."""
    if tool("wrk") is None:
        return {"error": WRK_MISSING}
    out = Path(tempfile.mkdtemp()) / "native.txt"
    argv = [spy, "record", "--pid", str(app.pid), "--duration", str(seconds), "--native", "--format", "raw"]
    recorder = await asyncio.create_subprocess_exec(
        *argv, "--output", str(out), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    url = f"{app.base}/fixed/orders?hold=0"
    await asyncio.to_thread(wrk, url, "orders", connections=10, seconds=seconds + 1)
    await recorder.wait()
    if not out.exists():
        return {"error": "py-spy --native could not sample"}
    leaves: Counter[str] = Counter()
    in_execute: Counter[str] = Counter()
    total = 0
    for frames, n in _stacks(out):
        total += n
        leaf = frames[-1].split(" (")[0]
        leaves[leaf] += n
        if any(f.startswith("Cursor.execute (aiopg/connection.py") for f in frames):
            in_execute[leaf] += n
    share = lambda n: round(100 * n / total, 1)  # noqa: E731
    return {
        "samples": total,
        "top_leaves": [(name, share(n)) for name, n in leaves.most_common(8)],
        "under_cursor_execute": share(sum(in_execute.values())),
        "send_under_cursor_execute": share(in_execute["send"]),
        "getpid": share(leaves["getpid"]),
    }


def _stacks(raw: Path) -> Iterator[tuple[list[str], int]]:
    """py-spy's ``--format raw`` output: each stack's frames, outermost first, and its sample count."""
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            yield stack.split(";"), int(count)


def _package(frame: str) -> str:
    for key, name in (
        ("(app/", "app (ours)"),
        ("/app/", "app (ours)"),
        ("aiohttp", "aiohttp"),
        ("aiopg", "aiopg"),
        ("psycopg2", "psycopg2"),
        ("asyncio", "asyncio"),
        ("logging", "logging"),
        ("multidict", "aiohttp"),
        ("yarl", "aiohttp"),
        ("aiojobs", "aiojobs"),
        ("json", "json"),
    ):
        if key in frame:
            return name
    return "other"


# --- 2b. what was tried to bring the app closer to the database -----------------------------------------------

UNIX_SOCKETS = Path("/var/run/postgresql")


def options(database_url: str) -> dict[str, tuple[dict[str, str], int]]:
    """Each configuration tried: its environment and how many processes serve the port."""
    found = {
        "as shipped": ({}, 1),
        "access log on (ACCESS_LOG=1)": ({"ACCESS_LOG": "1"}, 1),
        "uvloop (UVLOOP=1)": ({"UVLOOP": "1"}, 1),
        # two processes share each role's CONNECTION LIMIT of 20 (README, "Two processes behind a proxy")
        "2 processes, one port (REUSE_PORT=1)": ({"REUSE_PORT": "1", "PG_POOL_SIZE": "8"}, 2),
    }
    if (UNIX_SOCKETS / ".s.PGSQL.5432").exists():
        parts = urllib.parse.urlsplit(database_url)
        unix = f"postgresql://{parts.username or 'postgres'}@{parts.path}?host={UNIX_SOCKETS}"
        found["Postgres over a Unix socket"] = ({"DATABASE_URL": unix}, 1)
    return found


async def optimisations(app: BenchApp, cfg: Config, database_url: str) -> dict[str, Any]:
    """Fixed orders driven by wrk under each configuration, one configuration alive at a time (the roles'
    connection limits are shared), interleaved, pgbench once per round; each against pgbench and the shipped
    app of the same rounds."""
    tried = options(database_url)
    if tool("wrk") is None:
        print(WRK_MISSING, flush=True)
        return {"wrk": WRK_MISSING}
    runs: dict[str, list[float]] = {name: [] for name in tried}
    errors: dict[str, int] = dict.fromkeys(tried, 0)
    pg_runs: list[float] = []
    app.stop()  # its pools count against the same limits
    try:
        for _ in range(cfg.reps):
            for name, (env, processes) in tried.items():
                async with serving(app, env, processes) as base:
                    url = f"{base}/fixed/orders?hold=0"
                    if not cfg.smoke:
                        await asyncio.to_thread(wrk, url, "orders", connections=10, seconds=1)  # warm-up
                    by_wrk = await asyncio.to_thread(wrk, url, "orders", connections=10, seconds=cfg.seconds)
                    assert by_wrk is not None
                    runs[name].append(by_wrk["ok_rps"])
                    errors[name] += by_wrk["errors"]
            pg_runs.append(await asyncio.to_thread(_pgbench, database_url, cfg.seconds))
    finally:
        await asyncio.to_thread(app.start)
    pg = statistics.median(pg_runs)
    shipped = statistics.median(runs["as shipped"])
    return {
        "pgbench_tps": spread(pg_runs),
        "options": {
            name: {
                "rps": spread(values),
                "errors": errors[name],
                "to_pgbench": round(statistics.median(values) / pg, 3) if pg else None,
                "to_shipped": round(statistics.median(values) / shipped, 3) if shipped else None,
            }
            for name, values in runs.items()
        },
    }


@contextlib.asynccontextmanager
async def serving(app: BenchApp, env: dict[str, str], processes: int = 1) -> AsyncIterator[str]:
    """App processes beside the bench's own (stopped meanwhile by the caller: the roles' connection limits
    are shared), with ``env`` on top of its environment, on one port: its base URL."""
    port = toolkit.free_port()
    served = [toolkit.AppProcess(app.log, env, port=port) for _ in range(processes)]
    try:
        for process in served:
            await asyncio.to_thread(process.start)
        yield f"http://127.0.0.1:{port}"
    finally:
        for process in served:
            await asyncio.to_thread(process.stop)


# --- 2c. the cost of growth: orders from 10 to 1,000 concurrent clients ------------------------------------------

# Under a storm of clients that ignore Retry-After (wrk re-asks at once), what keeps the admitted orders moving:
# orders beyond the bound wait for a place (as shipped), or, refused at once (ORDERS_QUEUED=0), the knobs
# that let the admitted ones move anyway.
STORM_OPTIONS: dict[str, dict[str, str]] = {
    "as shipped": {},
    "ORDERS_QUEUED=0": {"ORDERS_QUEUED": "0"},
    "ORDERS_QUEUED=0 LISTEN_BACKLOG=16": {"ORDERS_QUEUED": "0", "LISTEN_BACKLOG": "16"},
    "ORDERS_QUEUED=0 UVLOOP=1 LISTEN_BACKLOG=16": {"ORDERS_QUEUED": "0", "UVLOOP": "1", "LISTEN_BACKLOG": "16"},
}


async def growth(app: BenchApp, cfg: Config) -> dict[str, Any]:
    """Orders driven by wrk at 10, 100 and 1,000 connections, each variant after a reset: throughput, latency
    and the answers that were not 201 (fixed: 503 at once beyond its admission bound; broken: whatever the
    piled-up pool and role do). The subscribers' side of growth is section 4's fan-out."""
    if tool("wrk") is None:
        print(WRK_MISSING, flush=True)
        return {"wrk": WRK_MISSING}
    counts = (2, 8) if cfg.smoke else (10, 100, 1000)
    rows: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    for connections in counts:
        for variant in VARIANTS:
            await asyncio.to_thread(app.reset)
            url = f"{app.base}/{variant}/orders?hold=0"
            figures = await asyncio.to_thread(wrk, url, "orders", connections=connections, seconds=cfg.seconds)
            assert figures is not None
            rows[variant].append({"connections": connections, **figures})
            await wait_quiet(app, variant)
    storm: dict[str, list[float]] = {name: [] for name in STORM_OPTIONS}
    app.stop()
    try:
        for _ in range(cfg.reps):  # interleaved, one configuration alive at a time
            for name, env in STORM_OPTIONS.items():
                async with serving(app, env) as base:
                    url = f"{base}/fixed/orders?hold=0"
                    figures = await asyncio.to_thread(
                        wrk, url, "orders", connections=counts[-1], seconds=cfg.seconds
                    )
                    assert figures is not None
                    storm[name].append(figures["ok_rps"])
    finally:
        await asyncio.to_thread(app.start)
    return {
        "rows": rows,
        "storm": {"connections": counts[-1], "orders_per_s": {name: spread(v) for name, v in storm.items()}},
    }


# --- 3. the load generator is not the bottleneck ----------------------------------------------------------------


async def generator(app: BenchApp, cfg: Config) -> dict[str, Any]:
    ours = await closed_loop(lambda i: ("GET", f"{app.base}/ping", None), concurrency=50, seconds=cfg.seconds)
    result: dict[str, Any] = {"ours_rps": round(ours.rps, 1), "ours_p99_ms": percentile_ms(ours.latencies, 99)}
    if tool("wrk"):
        run = await asyncio.to_thread(
            subprocess.run,
            ["wrk", "-t2", "-c50", f"-d{max(1, int(cfg.seconds))}s", f"{app.base}/ping"],
            capture_output=True,
            text=True,
        )
        match = re.search(r"Requests/sec:\s+([\d.]+)", run.stdout)
        wrk = float(match.group(1)) if match else 0.0
        result.update(wrk_rps=wrk, ratio_ours_to_wrk=round(ours.rps / wrk, 3) if wrk else None)
    else:
        result["wrk_rps"] = None
    return result


# --- 4. fan-out scale --------------------------------------------------------------------------------------------


PEER_NAMES = {"raw_sse": "raw aiohttp", "broadcaster_sse": "broadcaster"}
FANOUT_FIGURES = ("deliveries_per_s", "p50_ms", "p99_ms", "message_p99_ms_median", "cpu_us_per_delivery")
# Latency at a steady load, at the largest subscriber count: messages published on a clock, offering this many
# deliveries a second (below what each server delivers at saturation here), for this long.
PACED_DELIVERIES_PER_S, PACED_SECONDS = 20_000, 5.0
PACED_FIGURES = (*FANOUT_FIGURES, "message_p99_ms_max")


# encode/broadcaster as its README shows it, in an environment of its own (it needs redis-py < 8)
BROADCASTER_ENV = Path.home() / ".cache" / "asyncio-pitfalls" / "peers" / "broadcaster"
BROADCASTER_PINS = ("broadcaster[redis]==0.3.1", "starlette==1.10.0", "uvicorn[standard]==0.54.0", "redis==7.4.1")


def broadcaster_python() -> str | None:
    """The broadcaster environment's interpreter, made on first use (pip, bounded); None if it cannot be."""
    python = BROADCASTER_ENV / "bin" / "python"
    marker = BROADCASTER_ENV / "pins.txt"
    if python.exists() and marker.exists() and marker.read_text() == "\n".join(BROADCASTER_PINS):
        return str(python)
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(BROADCASTER_ENV)], check=True, timeout=120)
        pip = [str(python), "-m", "pip", "install", "-q", *BROADCASTER_PINS]
        subprocess.run(pip, check=True, timeout=600, capture_output=True)
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"broadcaster left out of section 4: its environment could not be made ({exc})", flush=True)
        return None
    marker.write_text("\n".join(BROADCASTER_PINS))
    return str(python)


async def fanout(app: BenchApp, cfg: Config) -> dict[str, Any]:
    """The fixed hub against its peers, the same subscribers and messages driven the same way, alternating,
    ``reps`` rounds: medians. Raw aiohttp SSE with in-process queues (``bench/peers/raw_sse.py``, no Redis:
    the floor) and, but in a smoke run, encode/broadcaster on Starlette + uvicorn through the same Redis
    (``bench/peers/broadcaster_sse.py``). Each server in a process of its own; CPU time is the server's, over
    the delivery of every message."""
    peers = [Peer(app.log, "raw_sse")]
    python = None if cfg.smoke else await asyncio.to_thread(broadcaster_python)
    if python is not None:
        redis_url = app.env.get("REDIS_URL", Settings().redis_url)  # the app's Redis
        peers.append(Peer(app.log, "broadcaster_sse", python=python, env={"REDIS_URL": redis_url}))
    servers: dict[str, Measured] = {"hub": app}
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {}
    paced: dict[str, list[dict[str, Any]]] = {}
    most = max(cfg.fanout)
    rate = PACED_DELIVERIES_PER_S / most
    try:
        for peer in peers:
            await asyncio.to_thread(peer.start)
            servers[PEER_NAMES[peer.name]] = peer
        runs = {name: {n: [] for n in cfg.fanout} for name in servers}
        # rounds of ≥ 60,000 deliveries: at 100 subscribers a point is over in ~1 s, and 3 rounds of 20,000
        # moved the medians by ±20 % between runs.
        for _ in range(cfg.reps):
            for n in cfg.fanout:
                for name, server in servers.items():
                    messages = max(cfg.messages, (0 if cfg.smoke else 60_000) // n)
                    runs[name][n].append(await _fan_out_round(server, n, messages))
            for name, server in servers.items():  # the largest count again, at a steady load all can carry
                messages = cfg.messages if cfg.smoke else round(PACED_SECONDS * rate)
                paced.setdefault(name, []).append(await _fan_out_round(server, most, messages, rate))
    finally:
        for peer in peers:
            await asyncio.to_thread(peer.stop)
    medians = {name: [_median_row(rows) for rows in by_n.values()] for name, by_n in runs.items()}
    await asyncio.to_thread(app.reset)
    broken_at = await _broken_capacity(app)
    await asyncio.to_thread(app.reset)
    result: dict[str, Any] = {
        "fixed": medians["hub"],
        "peers": {name: rows for name, rows in medians.items() if name != "hub"},
        "paced": {
            "subscribers": most,
            "messages_per_s": rate,
            "by_server": {name: _median_row(rows, PACED_FIGURES) for name, rows in paced.items()},
        },
        "broken_subscribers_at_failure": broken_at,
    }
    if tool("redis-benchmark"):
        n = 10_000 if cfg.smoke else 100_000
        run = await asyncio.to_thread(
            subprocess.run,
            ["redis-benchmark", "-q", "-n", str(n), "-c", "50", "PUBLISH", "bench:none", "hello"],
            capture_output=True,
            text=True,
        )
        match = re.search(r"([\d.]+) requests per second", run.stdout.replace("\r", "\n"))
        result["redis_benchmark_publish_per_s"] = float(match.group(1)) if match else None
    return result


async def _fan_out_round(server: Measured, n: int, messages: int, rate: float | None = None) -> dict[str, Any]:
    """One round against a freshly reset server, with the RSS each subscriber added."""
    await asyncio.to_thread(server.reset)
    before = await asyncio.to_thread(server.rss_kib)
    figures = await _fan_out_once(server, "fixed", subscribers=n, messages=messages, rate=rate)
    figures["rss_per_subscriber_kib"] = round((figures["rss_kib"] - before) / max(n, 1), 1)
    return figures


def _median_row(rows: list[dict[str, Any]], figures: tuple[str, ...] = FANOUT_FIGURES) -> dict[str, Any]:
    """One subscriber count's rounds: the median of each figure, the misses and connections of the worst."""
    row = dict(rows[0])
    for key in figures:
        row[key] = round(statistics.median(r[key] for r in rows), 1)
    row["rss_per_subscriber_kib"] = rows[0]["rss_per_subscriber_kib"]  # the first round's: RSS never shrinks
    row["missed"] = max(r["missed"] for r in rows)
    row["redis_connections_in_use"] = max(r["redis_connections_in_use"] for r in rows)
    row["rounds"] = len(rows)
    return row


async def _broken_capacity(app: BenchApp) -> int:
    url = f"{app.base}/broken/events/bench-capacity"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True)) as http:
        streams = []
        for _ in range(200):
            status, stream = await subscribe(http, url)
            if status != 200:
                break
            streams.append(stream)
        for stream in streams:
            stream.close()
    return len(streams)


# --- 5. recovery after an aborted-request storm ------------------------------------------------------------------


async def recovery(app: BenchApp, cfg: Config) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for variant in VARIANTS:
        await asyncio.to_thread(app.reset)
        baseline = (await asyncio.to_thread(state, app, variant))["postgres"]["pool_max"]
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True)) as http:

            async def abandon(method: str, url: str, body: Any, after: float) -> None:
                try:
                    async with asyncio.timeout(after), http.request(method, url, json=body) as resp:
                        await resp.read()
                except (TimeoutError, aiohttp.ClientError):
                    pass

            storm = [
                abandon("GET", f"{app.base}/{variant}/reports/slow?seconds={cfg.storm_seconds}", None, 0.3)
                for _ in range(40)
            ]
            storm += [
                abandon("POST", f"{app.base}/{variant}/orders?hold=0.2", {"customer": "s", "items": ITEMS}, 0.1)
                for _ in range(40)
            ]
            await asyncio.gather(*storm)
            ended = time.perf_counter()
            recovered = None
            while time.perf_counter() - ended < cfg.storm_seconds * 3 + 5:
                s = await asyncio.to_thread(state, app, variant)
                pg = s["postgres"]
                idle = s["jobs"]["active"] + s["jobs"]["pending"] == 0  # the shielded orders it still finishes
                pool_back = pg["pool_in_use"] == 0 and (pg["backends"] or 0) <= baseline
                if idle and pool_back and pg["backends_active"] == 0:
                    async with http.post(
                        f"{app.base}/{variant}/orders?hold=0", json={"customer": "r", "items": ITEMS}
                    ) as resp:
                        if resp.status == 201:
                            recovered = time.perf_counter() - ended
                            break
                await asyncio.sleep(0.05)
        out[variant] = {"seconds_to_healthy": round(recovered, 2) if recovered is not None else None}
    out["storm"] = f"40 slow reports ({cfg.storm_seconds:g} s) and 40 orders, all abandoned"
    return out


# --- the run -----------------------------------------------------------------------------------------------------


async def soak(app: BenchApp, cfg: Config) -> dict[str, Any]:
    """``python -m scripts.soak`` against the same app: 2 minutes (smoke: 10 s), then the drift."""
    out = Path(tempfile.mkdtemp()) / "soak.json"
    minutes = "0.17" if cfg.smoke else "2"
    run = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "scripts.soak", "--minutes", minutes, "--base-url", app.base, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    result: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {"error": run.stdout + run.stderr}
    result.pop("samples", None)
    return result


async def explore(cfg: Config) -> dict[str, Any]:
    """``python -m scripts.explore`` at depth 1 and 2 (smoke: the orders pair at depth 1): how long the
    cancellation map takes, and how many trials each target needs."""
    out: dict[str, Any] = {}
    for depth in (1,) if cfg.smoke else (1, 2):
        report = Path(tempfile.mkdtemp()) / "explore.json"
        target = "orders" if cfg.smoke else "all"
        started = time.perf_counter()
        run = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "scripts.explore", target, "--depth", str(depth), "--json", str(report)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=900,
        )
        seconds = round(time.perf_counter() - started, 1)
        maps = json.loads(report.read_text()) if report.exists() else []
        out[f"depth_{depth}"] = {
            "seconds": seconds,
            "exit_code": run.returncode,
            "targets": [
                {k: m[k] for k in ("target", "variant", "verdict", "points", "trials_run", "violating")}
                for m in maps
            ],
        }
    return out


BENCHMARKS = (
    "price_of_fix",
    "database_limit",
    "optimisations",
    "growth",
    "generator",
    "instructions",
    "fanout",
    "recovery",
    "drivers",
    "soak",
    "explore",
)


async def main_async(args: argparse.Namespace) -> int:
    cfg = Config.make(args.smoke)
    only = set(args.only.split(",")) if args.only else set(BENCHMARKS)
    out = Path(args.out)
    (out / "results").mkdir(parents=True, exist_ok=True)
    database_url = Settings.from_env().database_url
    log = out / "results" / "app.log.txt"
    log.unlink(missing_ok=True)
    app = BenchApp(log)
    results: dict[str, Any] = {}
    try:
        for name in BENCHMARKS:
            if name not in only:
                continue
            print(f"== {name}", flush=True)
            started = time.perf_counter()
            if name == "price_of_fix":
                results[name] = await price_of_fix(app, cfg)
            elif name == "database_limit":
                results[name] = await database_limit(app, cfg, database_url)
            elif name == "optimisations":
                results[name] = await optimisations(app, cfg, database_url)
            elif name == "growth":
                results[name] = await growth(app, cfg)
            elif name == "generator":
                results[name] = await generator(app, cfg)
            elif name == "instructions":
                results[name] = await instructions(app, smoke=cfg.smoke)
            elif name == "fanout":
                results[name] = await fanout(app, cfg)
            elif name == "recovery":
                results[name] = await recovery(app, cfg)
            elif name == "soak":
                results[name] = await soak(app, cfg)
            elif name == "explore":
                results[name] = await explore(cfg)
            elif name == "drivers":
                results[name] = await drivers.compare(database_url, cfg.seconds, cfg.concurrency, smoke=cfg.smoke)
            results[name]["bench_seconds"] = round(time.perf_counter() - started, 1)
            (out / "results" / f"{name}.json").write_text(json.dumps(results[name], indent=2) + "\n")
            print(json.dumps(results[name])[:400], flush=True)
    finally:
        app.stop()
    for name in BENCHMARKS:  # a partial run (--only) keeps the other sections from the last full run
        previous = out / "results" / f"{name}.json"
        if name not in results and previous.exists():
            results[name] = json.loads(previous.read_text())
    report.write(out, results, smoke=cfg.smoke)
    print(f"wrote {out / 'RESULTS.md'}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes: every benchmark in under a minute")
    p.add_argument("--only", help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    p.add_argument("--out", help="where results/ and RESULTS.md go (bench/; with --smoke a temporary folder)")
    args = p.parse_args()
    if args.out is None:  # a smoke run never overwrites the committed results
        args.out = tempfile.mkdtemp(prefix="bench-smoke-") if args.smoke else str(ROOT / "bench")
        print(f"results go to {args.out}")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
