"""Shared by the benchmarks: the app as a child process, a closed-loop HTTP load generator, statistics."""

from __future__ import annotations

import asyncio
import signal
import statistics
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from scripts import toolkit
from scripts.toolkit import percentile_ms


class BenchApp(toolkit.AppProcess):
    """The app under benchmark: migrated, started, and measured from outside (RSS, reset between runs)."""

    def __init__(self, log: Path, **env: str) -> None:
        super().__init__(log, env)
        self.migrate()
        try:
            self.start()
        except RuntimeError as exc:
            raise SystemExit(f"{exc}; see {log}") from None

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.base}/api/reset", method="POST"), timeout=30).read()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> float:
        try:
            return super().stop(sig, timeout)
        except subprocess.TimeoutExpired:
            return timeout


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


def tool(name: str) -> str | None:
    from shutil import which

    return which(name)
