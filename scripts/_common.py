"""Plumbing shared by the load scripts: loopback-only targets, progress display, verdict and --json report."""

from __future__ import annotations

import ipaddress
import json
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, cast
from urllib.parse import urlsplit

import aiohttp

from app.state import Snapshot, VariantState

EXPECTED = {"broken": "reproduced", "fixed": "held"}


def require_loopback(base_url: str) -> None:
    """Load stays on this machine: refuse any target that is not a loopback address."""
    host = urlsplit(base_url).hostname or ""
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as exc:
        raise SystemExit(f"cannot resolve {host!r}: {exc}") from None
    if not addresses or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise SystemExit(f"refusing to load {host!r}: load scripts only target loopback addresses (127.0.0.1)")


@dataclass
class Tally:
    """What happened to the requests, updated by the workers and shown by the progress line."""

    total: int
    started: float = field(default_factory=time.monotonic)
    done: int = 0
    ok: int = 0
    disconnects: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    expected: Counter[str] = field(default_factory=Counter)  # not sent, and rightly so (the app was stopping)
    gauges: dict[str, Any] = field(default_factory=dict)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


class Progress:
    """One status line, redrawn in place on a terminal, printed every few seconds otherwise."""

    def __init__(self, tally: Tally, stream: TextIO | None = None) -> None:
        self.tally = tally
        self.stream = stream or sys.stderr  # looked up now: a dashboard report may be copying it (_report)
        self.tty = self.stream.isatty()
        self._last_print = 0.0

    def line(self) -> str:
        t = self.tally
        errors = sum(t.errors.values())
        gauges = " ".join(f"{k} {v}" for k, v in t.gauges.items())
        return (
            f"[{t.done:>5}/{t.total}] ok {t.ok} hung-up {t.disconnects} errors {errors}"
            f"{'  ' + gauges if gauges else ''}  {t.elapsed:5.1f}s"
        )

    def update(self, *, final: bool = False) -> None:
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r\033[K" + self.line() + ("\n" if final else ""))
            self.stream.flush()
        elif final or now - self._last_print >= 2.0:
            self._last_print = now
            print(self.line(), file=self.stream, flush=True)


def finish(
    *,
    scenario: str,
    variant: str,
    tally: Tally,
    invariant: dict[str, Any],
    verdict: str,
    json_path: Path | None,
    extra: dict[str, Any] | None = None,
) -> int:
    """Print the summary and the VERDICT line, write --json, return the exit code (0 only when expected)."""
    report = {
        "scenario": scenario,
        "variant": variant,
        "requests": tally.total,
        "disconnects": tally.disconnects,
        "errors": dict(tally.errors),
        "expected": dict(tally.expected),
        "invariant": invariant,
        "verdict": verdict,
        "duration_s": round(tally.elapsed, 2),
        **(extra or {}),
    }
    for key, value in invariant["observed"].items():
        print(f"  {key:<24} {value!s:>8}   (fixed must be {invariant['expected'][key]})")
    if tally.errors:
        print("  errors: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.errors.items())))
    if tally.expected:
        print("  expected: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.expected.items())))
    print(f"VERDICT: {verdict}")
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if verdict == EXPECTED[variant] else 1


async def fetch_json(http: aiohttp.ClientSession, url: str, method: str = "GET") -> dict[str, Any]:
    async with http.request(method, url, timeout=aiohttp.ClientTimeout(total=10)) as resp:
        resp.raise_for_status()
        data: dict[str, Any] = await resp.json()
        return data


async def body_of(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    """A response's JSON object, or ``{"error": <its first 80 characters>}``: a proxy in front (``make
    topology``) answers its own errors in plain text or with an empty body."""
    text = await resp.text()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    return data if isinstance(data, dict) else {"error": text[:80] or f"empty {resp.status} body"}


async def variant_state(http: aiohttp.ClientSession, base: str, variant: str) -> VariantState:
    """The variant's part of ``/api/state``."""
    return cast(Snapshot, await fetch_json(http, f"{base}/api/state"))["variants"][variant]


def cannot_reach(base: str, exc: BaseException) -> int:
    print(f"cannot reach the app at {base} ({type(exc).__name__}): is it running? start it with make run")
    return 2
