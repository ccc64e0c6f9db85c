"""The load script against the app served by ``python -m app`` on a free port, both as real processes:
verdict line, exit code and --json for each variant, and the fixed variant still up after broken collapsed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
LOAD = [sys.executable, "-m", "scripts.load", "disconnect"]
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


@pytest.fixture
def served(settings: Settings, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url}
    log = (tmp_path / "app.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if get(f"{base}/healthz")[0] == 200:
                break
        except OSError:
            pass
        assert proc.poll() is None, (tmp_path / "app.log").read_text()
        assert time.monotonic() < deadline, "app did not become healthy in 20 s"
        time.sleep(0.1)
    yield base
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=15)
    finally:
        proc.kill()
        log.close()
    text = (tmp_path / "app.log").read_text()
    for bad in ("Task was destroyed but it is pending", "never retrieved", "Traceback"):
        assert bad not in text, text[-3000:]


def load(base: str, variant: str, report: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LOAD, "--variant", variant, "--base-url", base, "--seed", "7", "--json", str(report)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_verdicts_broken_then_fixed(served: str, tmp_path: Path) -> None:
    broken = load(served, "broken", tmp_path / "broken.json")
    assert broken.returncode == 0, broken.stdout + broken.stderr
    assert "VERDICT: reproduced" in broken.stdout.splitlines()
    report = json.loads((tmp_path / "broken.json").read_text())
    assert report["verdict"] == "reproduced"
    assert set(report) >= {"scenario", "variant", "requests", "disconnects", "errors", "invariant", "duration_s"}
    assert report["disconnects"] > 0
    observed = report["invariant"]["observed"]
    assert observed["orders_without_items"] > 0  # half-written orders
    assert observed["orphaned_backends"] > 0  # backends running for clients long gone
    assert report["peak_backends"] > report["pool_max"]  # piled up beyond the pool
    assert report["duration_s"] < 60

    # Same load on fixed, right after broken's collapse, in the same process.
    fixed = load(served, "fixed", tmp_path / "fixed.json")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "VERDICT: held" in fixed.stdout.splitlines()
    report = json.loads((tmp_path / "fixed.json").read_text())
    assert report["invariant"]["observed"] == {
        "orders_without_items": 0,
        "refused_requests": 0,
        "orphaned_backends": 0,
    }
    assert report["disconnects"] > 0
    assert report["orders_written"] > 0
    assert report["peak_backends"] < report["role_connection_limit"]
    assert report["duration_s"] < 60
    assert get(f"{served}/healthz")[0] == 200


def test_refuses_non_loopback_target() -> None:
    run = subprocess.run(
        [*LOAD, "--variant", "fixed", "--base-url", "http://192.0.2.1:8080"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode != 0
    assert "only target loopback" in run.stderr


def test_expected_verdict_decides_exit_code(served: str) -> None:
    """Nothing hung up: the run shows nothing, so the verdict is 'unexpected' and the exit code non-zero."""
    run = subprocess.run(
        [*LOAD, "--variant", "broken", "--base-url", served, "--requests", "20", "--disconnect-share", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "VERDICT: unexpected" in run.stdout.splitlines()
