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

from scripts._common import free_port, wait_healthy

ROOT = Path(__file__).resolve().parent.parent


class AppProcess:
    """``python -m app`` on a free loopback port (the local services, ``DATABASE_URL`` of the environment)."""

    def __init__(self, log: Path, **env: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        subprocess.run([sys.executable, "-m", "app", "migrate"], cwd=ROOT, check=True, capture_output=True)
        with log.open("a") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app", "--port", str(self.port)],
                cwd=ROOT,
                env={**os.environ, **env},
                stdout=out,
                stderr=out,
            )
        try:
            wait_healthy(self.base, 30, self.proc)
        except RuntimeError as exc:
            raise SystemExit(f"{exc}; see {log}") from None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.base}/api/reset", method="POST"), timeout=30).read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


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
            "p50_ms": pct_ms(self.latencies, 50),
            "p99_ms": pct_ms(self.latencies, 99),
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


def pct_ms(values: list[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0] * 1000, 2)
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000, 2)


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
