"""The client toolkit: what the tests, the load scripts, the soak, the demo and the benchmarks all need to drive
the app from outside — the app as a process, waiting until it is healthy or quiet, polling with a deadline,
percentiles and a one-line SQL helper against the real Postgres."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import psycopg2

from app.dashboard import port_taken
from app.scenario import ROOT
from app.scenarios.shield import ACCOUNTS
from app.state import VariantState

T = TypeVar("T")
__all__ = ["ACCOUNTS", "ROOT", "AppProcess", "free_port", "free_ports", "percentile_ms", "poll", "quiet", "sql"]


def free_port() -> int:
    """A loopback port nothing listens on right now (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> int:
    """The first of ``n`` consecutive loopback ports nothing listens on right now (aiomonitor needs three)."""
    while True:
        first = free_port()
        if not any(port_taken("127.0.0.1", first + i) for i in range(1, n)):
            return first


def wait_healthy(base: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Block until ``base``/healthz answers 200; RuntimeError if ``proc`` exits or ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the app exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{base} was not healthy within {timeout:.0f} s")


class AppProcess:
    """``python -m app`` as a real process on a free loopback port, its output appended to ``log`` (None: on
    this terminal); ``env``
    overrides the environment (``DATABASE_URL``, ``SHUTDOWN_TIMEOUT``, ...). ``start`` waits until healthy."""

    def __init__(
        self,
        log: Path | None,
        env: Mapping[str, str] | None = None,
        *,
        port: int | None = None,
        command: Sequence[str] = (sys.executable, "-m", "app", "--port"),
    ) -> None:
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.env = {**os.environ, **(env or {})}
        self.command = command  # the port is appended (the bench's peers are started the same way)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> AppProcess:
        argv = [*self.command, str(self.port)]
        log = self.log
        with contextlib.ExitStack() as stack:
            out = stack.enter_context(log.open("a")) if log is not None else None
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=out, stderr=out)
        wait_healthy(self.base, timeout, self.proc)  # RuntimeError: the caller shows its log
        return self

    def migrate(self, *, quiet: bool = True) -> None:
        argv = [sys.executable, "-m", "app", "migrate"]
        subprocess.run(argv, cwd=ROOT, env=self.env, check=True, capture_output=quiet)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> float:
        """Send ``sig`` and wait for the exit (killed if it takes longer than ``timeout``); the seconds it took."""
        started = time.monotonic()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        return time.monotonic() - started

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def quiet(state: VariantState) -> bool:
    """Nothing of the variant in flight: no aiojobs job and no pool connection in use."""
    return state["jobs"]["active"] + state["jobs"]["pending"] == 0 and state["postgres"]["pool_in_use"] == 0


async def poll(
    read: Callable[[], Awaitable[T]], until: Callable[[T], bool], *, timeout: float = 10.0, every: float = 0.05
) -> T:
    """Read until ``until(value)`` holds or ``timeout`` passes; returns the last value read either way (the
    caller asserts on it, so a failure shows what was last seen)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await read()
        if until(value) or loop.time() >= deadline:
            return value
        await asyncio.sleep(every)


def percentile_ms(values: Sequence[float], q: int, digits: int = 2) -> float | None:
    """The q-th percentile (1..99) of ``values`` in seconds, as milliseconds; None for no values."""
    if not values:
        return None
    if len(values) == 1:
        return round(values[0] * 1000, digits)
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000, digits)


def sql(database_url: str, statement: str, args: Any = None) -> list[tuple[Any, ...]]:
    """Run one statement on its own autocommit connection; its rows ([] when it returns none)."""
    conn = psycopg2.connect(database_url, connect_timeout=5)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(statement, args)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()
