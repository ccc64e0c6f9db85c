"""``make bench BENCH_SMOKE=1``: every benchmark runs end to end with tiny sizes and writes its report.
(The figures themselves are not asserted: timing belongs in the benchmarks, not in the tests.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from app.settings import Settings
from bench.run import BENCHMARKS
from tests.helpers import ROOT


def test_bench_smoke(settings: Settings, tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url},
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for name in BENCHMARKS:
        results = json.loads((tmp_path / "results" / f"{name}.json").read_text())
        assert results["bench_seconds"] > 0  # it ran: a benchmark that took no time measured nothing
    assert (tmp_path / "results" / "price_of_fix.png").stat().st_size > 1000
    text = (tmp_path / "RESULTS.md").read_text()
    headings = (
        "price of each fix",
        "database's own limit",
        "load generator",
        "Instructions per request",
        "Fan-out",
        "Recovery",
        "Drivers",
        "Soak",
        "cancellation map",
    )
    assert all(heading in text for heading in headings), text
    explore = json.loads((tmp_path / "results" / "explore.json").read_text())["depth_1"]
    assert explore["exit_code"] == 0  # the orders pair: broken reproduced, fixed held
    assert [t["verdict"] for t in explore["targets"]] == ["reproduced", "held"]
    fanout = json.loads((tmp_path / "results" / "fanout.json").read_text())
    assert fanout["broken_subscribers_at_failure"] == 20  # the broken pool's size: behaviour, not timing
    assert all(row["missed"] == 0 and row["redis_connections_in_use"] <= 2 for row in fanout["fixed"])
    paced = fanout["paced"]["by_server"]  # published on a clock: every server delivered every message
    assert set(paced) == {"hub", "raw aiohttp"} and all(row["missed"] == 0 for row in paced.values())
