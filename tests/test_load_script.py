"""The load script against the app served by ``python -m app`` on a free port, both as real processes:
verdict line, exit code and --json for each variant, and the fixed variant still up after broken collapsed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.settings import Settings
from tests.helpers import ROOT, App, get

LOAD = [sys.executable, "-m", "scripts.load", "disconnect"]
pytestmark = pytest.mark.slow


@pytest.fixture
def served(spawn_app: Callable[..., App]) -> str:
    return spawn_app().base


def load(base: str, variant: str, report: Path, scenario: str = "disconnect") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LOAD[:-1], scenario, "--variant", variant, "--base-url", base, "--seed", "7", "--json", str(report)],
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


def test_pubsub_verdicts(served: str, tmp_path: Path) -> None:
    broken = load(served, "broken", tmp_path / "broken.json", scenario="pubsub")
    assert broken.returncode == 0, broken.stdout + broken.stderr
    assert "VERDICT: reproduced" in broken.stdout.splitlines()
    report = json.loads((tmp_path / "broken.json").read_text())
    observed = report["invariant"]["observed"]
    assert observed["subscribers_refused"] == 200 - 20  # the pool (20) is all it can serve
    assert observed["publishes_failed"] == 20  # and then nothing else works either
    assert observed["redis_connections_in_use"] == 20

    fixed = load(served, "fixed", tmp_path / "fixed.json", scenario="pubsub")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "VERDICT: held" in fixed.stdout.splitlines()
    report = json.loads((tmp_path / "fixed.json").read_text())
    assert report["invariant"]["observed"] == {
        "subscribers_refused": 0,
        "publishes_failed": 0,
        "messages_missed": 0,
        "redis_connections_in_use": 1,
    }
    assert report["disconnects"] == 50
    assert report["deliveries"] == 150 * 20


SMALL = ["--requests", "100", "--seed", "3"]


@pytest.mark.parametrize(
    ("variant", "flags", "verdict"),
    [
        ("broken", [], "reproduced"),
        ("fixed", [], "held"),
        ("broken", ["--kill"], "reproduced"),
        ("fixed", ["--kill"], "held"),
    ],
    ids=["broken-sigterm", "fixed-sigterm", "broken-sigkill", "fixed-sigkill"],
)
def test_shield_verdicts_across_a_stop(
    settings: Settings, tmp_path: Path, variant: str, flags: list[str], verdict: str
) -> None:
    """The script runs the app itself, stops it mid-load (SIGTERM, or SIGKILL), restarts it and reads the
    stats: broken loses accepted transfers, fixed loses none and the money adds up."""
    report_path = tmp_path / "shield.json"
    run = subprocess.run(
        [*LOAD[:-1], "shield", "--variant", variant, "--spawn-app", *flags, *SMALL, "--json", str(report_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"VERDICT: {verdict}" in run.stdout.splitlines()
    report = json.loads(report_path.read_text())
    observed = report["invariant"]["observed"]
    assert report["accepted"] > 0 and report["disconnects"] > 0
    assert observed["balance_change"] == 0  # one transaction per transfer: never half a transfer
    if variant == "broken":
        assert observed["lost"] > 0
    else:
        assert observed == {"lost": 0, "failed": 0, "balance_change": 0}
        assert report["committed"] == report["accepted"]
        assert report["log_warnings"] == {"Task was destroyed but it is pending": 0, "never retrieved": 0}


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


def ladder(served: str, scenario: str, tmp_path: Path, *args: str) -> tuple[str, dict[str, dict[str, Any]]]:
    rows_json = tmp_path / f"ladder-{scenario}.json"
    argv = [sys.executable, "-m", "scripts.ladder", scenario, "--base-url", served, *args]
    run = subprocess.run([*argv, "--json", str(rows_json)], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout, {row["step"].split(":")[0]: row for row in json.loads(rows_json.read_text())}


def test_the_pubsub_ladder_tells_the_leak_from_the_wall(served: str, tmp_path: Path) -> None:
    """``scripts.ladder pubsub`` (#15): broken and the middle step (a PubSub per request, closed) both refuse the
    subscribers beyond the pool while they are live; once they leave, broken still holds every connection and
    fails, the middle step holds none and works; the hub serves everyone. Each step after a reset (before:
    ``--reset`` was ignored by every load but disconnect's, and the middle step inherited broken's leak)."""
    out, rows = ladder(served, "pubsub", tmp_path)
    broken, middle, fixed = rows["broken"], rows["middle"], rows["fixed"]
    assert broken["refused"] == middle["refused"] > 0 and fixed["refused"] == 0
    assert (broken["publish after all left"], broken["Redis conns held after"]) == (503, 20)
    assert (middle["publish after all left"], middle["Redis conns held after"]) == (202, 0)
    assert fixed["publish after all left"] == 202
    assert "Only the hub serves them all" in out


def test_the_ladder_says_what_the_transaction_and_the_shield_each_buy(served: str, tmp_path: Path) -> None:
    """``scripts.ladder disconnect``: the same orders-only load on broken, on the middle step (a transaction
    without the shield) and on fixed (#15). Broken leaves orders half-written; the middle step never does, but
    loses the orders whose client hung up (rolled back with the cancel); fixed lands them whole."""
    out, rows = ladder(served, "disconnect", tmp_path, "--requests", "80")
    broken, middle, fixed = rows["broken"], rows["middle"], rows["fixed"]
    assert broken["half-written"] > 0 and broken["verdict"] == "reproduced"
    # a client may still hang up after the COMMIT: then its order landed, whichever the step
    assert middle["half-written"] == 0 and middle["gone"] > 0 and middle["verdict"] == "held"
    assert fixed["half-written"] == 0 and fixed["landed whole"] > middle["landed whole"]
    assert fixed["verdict"] == "held"
    assert "What became of the orders whose client hung up" in out
