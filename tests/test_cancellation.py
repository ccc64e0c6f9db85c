"""The cancellation gallery: for every pitfall, the trap springs on broken and not on fixed."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest
from aiohttp.test_utils import TestClient

from app.scenarios.cancellation import PITFALLS
from tests.conftest import ROOT, App
from tests.helpers import get_json

# Python 3.12 fixed asyncio.wait_for: there the broken variant can no longer lose a cancellation.
SPRINGS_ON_BROKEN = {name: not (name == "wait-for-race" and sys.version_info >= (3, 12)) for name in PITFALLS}


@pytest.mark.parametrize("name", list(PITFALLS))
@pytest.mark.parametrize("variant", ["broken", "fixed"])
async def test_pitfall(client: TestClient, name: str, variant: str) -> None:
    result = await get_json(client, f"/{variant}/pitfalls/{name}")
    assert result["pitfall"] == name and result["variant"] == variant
    assert result["trap"] is (variant == "broken" and SPRINGS_ON_BROKEN[name]), result
    assert result["summary"]


async def test_the_figures_behind_the_verdicts(client: TestClient) -> None:
    """What each trap looks like, in the numbers each pitfall reports."""

    async def both(name: str) -> tuple[dict, dict]:
        return (
            await get_json(client, f"/broken/pitfalls/{name}"),
            await get_json(client, f"/fixed/pitfalls/{name}"),
        )

    broken, fixed = await both("swallowed-cancel")
    assert (broken["timeout_raised"], broken["steps_done"]) == (False, 10)  # ran its full 0.5 s
    assert fixed["timeout_raised"] and fixed["steps_done"] < 10

    broken, fixed = await both("slow-cleanup-timeout")
    assert broken["elapsed_s"] >= 1.5 and broken["cleanup_finished"]  # asked for 0.5 s
    assert not fixed["cleanup_finished"]  # cut at its bound

    broken, fixed = await both("unawaited-cancel")
    assert not broken["cleanup_ran"] and "Task was destroyed but it is pending!" in broken["loop_errors"]
    assert fixed["cleanup_ran"] and fixed["loop_errors"] == []

    broken, fixed = await both("gather-orphans")
    assert (broken["running_after_failure"], broken["writes_after_failure"]) == (3, 3)
    assert (fixed["running_after_failure"], fixed["writes_after_failure"]) == (0, 0)

    broken, fixed = await both("hidden-coroutine")
    assert broken["missed"] == ["lambda", "async __call__", "sync wrapper"]
    assert broken["never_awaited_warnings"] == 3
    assert fixed["missed"] == [] and fixed["never_awaited_warnings"] == 0

    broken, fixed = await both("blocking-call")
    assert broken["loop_stall_ms"] >= 400  # nothing else ran during the 0.5 s call
    assert fixed["loop_stall_ms"] < 400


async def test_unknown_pitfall_is_404(client: TestClient) -> None:
    resp = await client.get("/fixed/pitfalls/nope")
    assert resp.status == 404
    assert "swallowed-cancel" in (await resp.json())["error"]


def test_script_verdicts(spawn_app: Callable[..., App]) -> None:
    """``python -m scripts.pitfall`` for every pitfall and variant: the verdict and exit code."""
    app = spawn_app()
    for name in PITFALLS:
        for variant in ("broken", "fixed"):
            run = subprocess.run(
                [sys.executable, "-m", "scripts.pitfall", name, "--variant", variant, "--base-url", app.base],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
            )
            expected = "reproduced" if variant == "broken" and SPRINGS_ON_BROKEN[name] else "held"
            assert f"VERDICT: {expected}" in run.stdout.splitlines(), run.stdout + run.stderr
            assert run.returncode == (0 if expected == {"broken": "reproduced", "fixed": "held"}[variant] else 1)
