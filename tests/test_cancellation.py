"""The cancellation gallery: for every pitfall, the trap springs on broken and not on fixed."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable

import pytest
from aiohttp.test_utils import TestClient

from app.scenarios.cancellation import PITFALLS
from app.settings import VARIANTS
from tests.helpers import ROOT, App, Callers, get_json, poll

# Python 3.12 fixed asyncio.wait_for: there the broken variant can no longer lose a cancellation.
SPRINGS_ON_BROKEN = {name: not (name == "wait-for-race" and sys.version_info >= (3, 12)) for name in PITFALLS}


@pytest.mark.parametrize("name", list(PITFALLS))
@pytest.mark.parametrize("variant", VARIANTS)
async def test_pitfall(client: TestClient, name: str, variant: str) -> None:
    result = await get_json(client, f"/{variant}/pitfalls/{name}")
    assert result["pitfall"] == name and result["variant"] == variant
    assert result["trap"] is (variant == "broken" and SPRINGS_ON_BROKEN[name]), result


@pytest.mark.parametrize("name", list(PITFALLS))
async def test_summaries_report_what_happened(client: TestClient, name: str) -> None:
    """The one-line summary is made from the run, not a fixed text: broken's and fixed's differ."""
    broken = await get_json(client, f"/broken/pitfalls/{name}")
    fixed = await get_json(client, f"/fixed/pitfalls/{name}")
    if SPRINGS_ON_BROKEN[name]:
        assert broken["summary"] != fixed["summary"], (broken["summary"], fixed["summary"])


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

    assert not broken["cleanup_ran_under_asyncio_run"] and fixed["cleanup_ran_under_asyncio_run"]

    broken, fixed = await both("cancel-then-wait")
    assert broken["hung"] and broken["elapsed_s"] >= 0.5  # only the measurement's own bound ended the wait
    assert not fixed["hung"] and broken["cancels_lost"] == fixed["cancels_lost"] == 1  # the same worker

    broken, fixed = await both("first-wins")
    assert broken["error"] == "::1: connection refused" and broken["still_running_after_return"]
    assert (fixed["connected_to"], fixed["error"], fixed["still_running_after_return"]) == ("127.0.0.1", None, [])

    broken, fixed = await both("shielded-error")
    assert broken["recorded"] == [] and broken["asyncio_reported"] == ["Task exception was never retrieved"]
    assert len(fixed["recorded"]) == 1 and fixed["asyncio_reported"] == []

    broken, fixed = await both("pool-wait")
    assert None in broken["next_request_wait_s"]  # timed out with a connection to give
    assert None not in fixed["next_request_wait_s"] and len(fixed["next_request_wait_s"]) == 6

    broken, fixed = await both("commit-retry")
    assert not broken["first_attempt_answered"] and not fixed["first_attempt_answered"]  # hung up in COMMIT
    assert broken["purchases_written"] == 2 and broken["retry_answer"]["purchase_id"] == broken["purchase_ids"][1]
    assert fixed["purchases_written"] == 1 and fixed["retry_answer"]["purchase_id"] == fixed["purchase_ids"][0]

    broken, fixed = await both("gather-orphans")
    assert (broken["running_after_failure"], broken["writes_after_failure"]) == (3, 3)
    assert (fixed["running_after_failure"], fixed["writes_after_failure"]) == (0, 0)

    broken, fixed = await both("self-cancel")
    assert broken["writes_before_stop"] == fixed["writes_before_stop"] == ["before the stop"]  # both ran
    assert broken["writes_after_stop"] == ["written after the stop"] and broken["outcome"].startswith("cancelled")
    assert fixed["writes_after_stop"] == [] and fixed["outcome"] == "returned"

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
        for variant in VARIANTS:
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


def tickers() -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if t.get_coro().__qualname__.endswith("ticker")]  # type: ignore[union-attr]


async def test_blocking_call_leaves_no_ticker_behind_a_hang_up(client: TestClient) -> None:
    """20 hang-ups while the pitfall runs. Before: each left its ticker task running (100 wake-ups a second,
    a growing list) for the life of the process."""
    seen: set[asyncio.Task] = set()

    async def new_tickers() -> set[asyncio.Task]:
        return set(tickers()) - seen

    async with Callers(client) as callers:
        for _ in range(20):
            callers.start("GET", "/fixed/pitfalls/blocking-call")
            new = await poll(new_tickers, bool)  # its ticker runs
            seen.update(new)
            await callers.hang_up()
    assert len(seen) == 20
    left = await poll(lambda: asyncio.sleep(0, len(tickers())), lambda n: n == 0, timeout=5)
    assert left == 0, f"{left} of 20 tickers still running"


async def test_blocking_call_never_fetches_from_the_host_header(client: TestClient) -> None:
    """The probe goes to the server's own socket. Before: it was built from ``request.url.origin()``, i.e. the
    Host header, so a client could make the server connect anywhere (and hold a thread up to 10 s)."""
    accepted: list[int] = []

    async def trap(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        writer.close()

    server = await asyncio.start_server(trap, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        resp = await client.get("/fixed/pitfalls/blocking-call", headers={"Host": f"127.0.0.1:{port}"})
        body = await resp.json()
    assert accepted == []
    assert resp.status == 200 and body["healthz_latency_ms"] > 0, body


async def test_the_gallery_list_says_what_each_shows(client: TestClient) -> None:
    """``--list`` and the dashboard's rows: each pitfall's whole first paragraph on one line, not a line cut
    mid-sentence (before: the docstring's first line)."""
    listed = await get_json(client, "/fixed/pitfalls")
    assert list(listed) == list(PITFALLS)
    for name, text in listed.items():
        assert text.endswith((".", ")", '!")')) and "``" not in text and "\n" not in text, (name, text)
