"""The compose topology for real, without Docker (#16): two app processes with the compose file's environment
behind Debian's caddy running deploy/Caddyfile (``scripts.topology``). Through the proxy every load verdict is
as without it, hang-ups at the proxy cancel the handlers behind it, a message published on one process
reaches subscribers on the other, and SIGTERM of one app costs no request; behind the bare ``caddy
reverse-proxy`` the same SIGTERM turns requests into 502s, which is why the Caddyfile has its health check."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app.settings import Settings
from tests.helpers import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def caddy() -> None:
    if shutil.which("caddy") is None:
        if os.environ.get("CI"):
            pytest.fail("caddy is missing: .ci/run installs Debian's caddy")
        pytest.skip("caddy not installed (apt-get install caddy); .ci/run always runs this")


def topology(settings: Settings, tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], Any]:
    report = tmp_path / "topology.json"
    run = subprocess.run(
        [sys.executable, "-m", "scripts.topology", *args, "--json", str(report)],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url},
        capture_output=True,
        text=True,
        timeout=300,
    )
    return run, json.loads(report.read_text())["checks"] if report.exists() else None


def test_through_the_compose_proxy_everything_holds(settings: Settings, tmp_path: Path) -> None:
    run, checks = topology(settings, tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "TOPOLOGY: held (7/7 checks)" in run.stdout
    assert set(checks["healthz"]["answered_by"]) == {"app1", "app2"}
    assert checks["load disconnect/broken"]["verdict"] == "reproduced"
    assert checks["load disconnect/broken"]["handlers_cancelled_behind_proxy"] > 0  # a hang-up crosses caddy
    assert checks["load disconnect/fixed"]["verdict"] == "held"
    assert checks["load pubsub/broken"]["verdict"] == "reproduced"
    assert checks["load pubsub/fixed"]["verdict"] == "held"
    fanout = checks["fan-out"]
    assert all(fanout["subscribers_per_app"].values()) and fanout["received_from_both"] == 20
    assert checks["sigterm"]["failed"] == 0 and checks["sigterm"]["requests"] >= 200


def test_behind_the_bare_proxy_a_stopping_app_turns_requests_into_502s(settings: Settings, tmp_path: Path) -> None:
    run, checks = topology(settings, tmp_path, "--proxy", "bare", "--no-loads")
    assert run.returncode == 1, run.stdout + run.stderr
    assert checks["healthz"]["ok"] and checks["fan-out"]["ok"]
    assert checks["sigterm"]["outcomes"].get("502", 0) > 0, checks["sigterm"]
