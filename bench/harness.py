"""Shared by the benchmarks: the app as a child process, a closed-loop HTTP load generator, statistics."""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from scripts import toolkit
from scripts.toolkit import percentile_ms


class Measured(toolkit.AppProcess):
    """A server process the bench measures from outside: its RSS and CPU time (from /proc); ``reset`` between
    runs (nothing, unless it has state to clear)."""

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def reset(self) -> None:
        pass


class BenchApp(Measured):
    """The app under benchmark: migrated, started, and measured from outside (RSS, reset between runs)."""

    def __init__(self, log: Path, **env: str) -> None:
        super().__init__(log, env)
        self.migrate()
        try:
            self.start()
        except RuntimeError as exc:
            raise SystemExit(f"{exc}; see {log}") from None

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.base}/api/reset", method="POST"), timeout=30).read()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> float:
        try:
            return super().stop(sig, timeout)
        except subprocess.TimeoutExpired:
            return timeout


class Peer(Measured):
    """A peer server for section 4 (``bench/peers/<name>.py``, run by ``python``), answering the app's event
    URLs: started, and measured from outside like the app."""

    def __init__(
        self, log: Path | None, name: str, *, python: str = sys.executable, env: dict[str, str] | None = None
    ) -> None:
        super().__init__(log, env, command=(python, "-m", f"bench.peers.{name}"))
        self.name = name


@dataclass
class Run:
    requests: int
    errors: int
    seconds: float
    latencies: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def summary(self) -> dict[str, Any]:
        return {
            "rps": round(self.rps, 1),
            "p50_ms": percentile_ms(self.latencies, 50),
            "p99_ms": percentile_ms(self.latencies, 99),
            "errors": self.errors,
        }


Request = Callable[[int], tuple[str, str, Any]]


async def closed_loop(make: Request, *, concurrency: int, seconds: float) -> Run:
    """``concurrency`` clients, each sending its next request when the last is answered, for ``seconds``."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(10**9))
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as http:
        stop = time.perf_counter() + seconds

        async def client() -> None:
            nonlocal errors
            while time.perf_counter() < stop:
                method, url, body = make(next(counter))
                started = time.perf_counter()
                try:
                    async with http.request(method, url, json=body) as resp:
                        await resp.read()
                        ok = resp.status < 400
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return Run(len(latencies), errors, elapsed, latencies)


def spread(values: list[float]) -> dict[str, float]:
    """Median and range of repeated measurements."""
    return {
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
    }


WRK_MISSING = "wrk is not installed (apt-get install wrk): the figures driven by it are skipped"
WRK_SCRIPTS = Path(__file__).resolve().parent / "wrk"


def wrk(url: str, script: str, *, connections: int, seconds: float) -> dict[str, Any] | None:
    """wrk (one thread, ``connections`` connections) against ``url`` with ``bench/wrk/<script>.lua``: requests
    per second, latency percentiles and the answers that were not 2xx. None when wrk is not installed."""
    binary = tool("wrk")
    if binary is None:
        return None
    argv = [binary, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    done = subprocess.run(
        [*argv, "-s", str(WRK_SCRIPTS / f"{script}.lua"), url], capture_output=True, text=True, check=True
    )
    figures: dict[str, Any] = {"rps": float(_after(done.stdout, "Requests/sec:"))}
    for q in ("50", "99"):
        figures[f"p{q}_ms"] = _ms(_after(done.stdout, f"{q}%"))
    line = next((x for x in done.stdout.splitlines() if "Socket errors:" in x), "")  # "connect 0, read 2, ..."
    socket_errors = sum(int(word.rstrip(",")) for word in line.split() if word.rstrip(",").isdigit())
    figures["errors"] = int(_after(done.stdout, "Non-2xx or 3xx responses:") or 0) + socket_errors
    # "  10999 requests in 5.01s, 1.91MB read": the answers that were 2xx, per second
    total = next((x.split() for x in done.stdout.splitlines() if " requests in " in x), ["0", "", "", "1s,"])
    seconds = float(total[3].rstrip(",").removesuffix("s") or 1)
    figures["ok_rps"] = round(max(0, int(total[0]) - figures["errors"]) / seconds, 1)
    return figures


def _after(text: str, label: str) -> str:
    line = next((x for x in text.splitlines() if x.strip().startswith(label)), "")
    return line.strip().removeprefix(label).split()[0] if line else ""


def _ms(value: str) -> float | None:
    """wrk's latency ("850.00us", "4.37ms", "1.20s") in milliseconds."""
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if value.endswith(unit):
            return round(float(value.removesuffix(unit)) * factor, 2)
    return None


def tool(name: str) -> str | None:
    from shutil import which

    return which(name)
