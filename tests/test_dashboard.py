"""Conference mode: /metrics in the Prometheus format, the load runner, and the dashboard in a real browser
(Debian's headless Chromium, driven by Playwright; no browser download)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, make_mocked_request
from prometheus_client.parser import text_string_to_metric_families

from app import dashboard
from app.factory import create_app
from app.settings import VARIANTS, Settings
from app.talk import TALK
from scripts.toolkit import free_ports
from tests.helpers import ROOT, App, free_port, get

ITEMS = [{"sku": "tea", "qty": 1}]


def families(text: str) -> dict[str, dict[tuple, float]]:
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


async def test_metrics_parse_and_move(client: TestClient) -> None:
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=")
    before = families(await resp.text())
    for name in (
        "pitfalls_pg_pool_size",
        "pitfalls_pg_backends",
        "pitfalls_redis_connections_in_use",
        "pitfalls_sse_subscribers",
        "pitfalls_jobs_active",
        "pitfalls_orders_without_items",
        "pitfalls_transfers_lost",
        "pitfalls_handlers_cancelled_total",
    ):
        assert set(before[name]) == {(("variant", "broken"),), (("variant", "fixed"),)}, name

    for _ in range(3):
        assert (await client.post("/broken/orders?hold=0", json={"customer": "a", "items": ITEMS})).status == 201
    assert (await client.post("/broken/orders", data=b"{")).status == 400
    after = families(await (await client.get("/metrics")).text())
    key = (("outcome", "2xx"), ("scenario", "disconnect"), ("variant", "broken"))
    assert after["pitfalls_requests_total"][key] == 3
    bad = (("outcome", "4xx"), ("scenario", "disconnect"), ("variant", "broken"))
    assert after["pitfalls_requests_total"][bad] == 1


async def test_load_api_guards(client: TestClient, settings: Settings) -> None:
    for body in ({"scenario": "nope", "variant": "broken"}, {"scenario": "disconnect", "variant": "x"}):
        resp = await client.post("/api/load", json=body)
        assert resp.status == 400
    request = make_mocked_request("POST", "/api/load", app=create_app(settings)).clone(remote="192.0.2.9")
    assert (await dashboard.start_load(request)).status == 403
    assert (await (await client.get("/api/load")).json())["running"] is False


async def test_one_load_at_a_time(client: TestClient) -> None:
    resp = await client.post("/api/load", json={"scenario": "pubsub", "variant": "fixed"})
    assert resp.status == 202
    second = await client.post("/api/load", json={"scenario": "pubsub", "variant": "broken"})
    assert second.status == 409
    runner = client.app[dashboard.loads_key]
    assert runner.task is not None
    await runner.task  # bounded: the load script stops by itself
    status = await (await client.get("/api/load")).json()
    assert (status["running"], status["returncode"], status["verdict"]) == (False, 0, "held")


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs Debian's chromium")
        pytest.skip("chromium not installed (apt-get install chromium); .ci/run always runs this test")
    return path


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


async def test_dashboard_in_a_browser(spawn_app: Callable[..., App], tmp_path: Path) -> None:
    """Start the broken disconnect load from its button: the broken column's failure count rises while the
    fixed column stays at 0; then the fixed load from its button: it holds, still 0."""
    from playwright.async_api import async_playwright

    executable = chromium()
    app = spawn_app()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1600, "height": 1100})
            await page.goto(f"{app.base}/")
            await page.wait_for_selector("#conn.ok", timeout=15_000)  # the event stream is live
            broken = page.get_by_test_id("failures-disconnect-broken")
            fixed = page.get_by_test_id("failures-disconnect-fixed")
            await page.wait_for_function(
                "document.querySelector('[data-testid=failures-disconnect-fixed]').firstChild.textContent === '0'",
                timeout=10_000,
            )

            await page.get_by_test_id("load-disconnect-broken").click()
            await page.wait_for_function(
                "parseInt(document.querySelector('[data-testid=failures-disconnect-broken]')"
                ".firstChild.textContent) > 0",
                timeout=60_000,
            )
            await page.wait_for_function(
                "document.querySelector('[data-testid=load-state]').textContent.includes('reproduced')",
                timeout=90_000,
            )
            assert int((await broken.inner_text()).split()[0]) > 0
            assert (await fixed.inner_text()).split()[0] == "0"

            await page.get_by_test_id("load-disconnect-fixed").click()
            await page.wait_for_function(
                "document.querySelector('[data-testid=load-state]').textContent.includes('fixed: held')",
                timeout=90_000,
            )
            assert (await fixed.inner_text()).split()[0] == "0"
            assert int((await broken.inner_text()).split()[0]) > 0
            await page.get_by_test_id("pitfall-swallowed-cancel-broken").click()
            await page.wait_for_selector("#gallery td.result.trap", timeout=10_000)
            await page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        finally:
            await browser.close()
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000


async def test_cancellation_map_panel_in_a_browser(spawn_app: Callable[..., App], tmp_path: Path) -> None:
    """Pick ``orders``, run the map from the page: the broken column marks the hold (an order without items)
    as broken, the fixed column marks its one point held; a click shows what happened there."""
    from playwright.async_api import async_playwright

    app = spawn_app()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1600, "height": 1100})
            await page.goto(f"{app.base}/")
            await page.get_by_test_id("map-target").select_option("orders")
            await page.get_by_test_id("map-run").click()
            await page.wait_for_function(
                "document.querySelector('[data-testid=map-state]').textContent.includes('orders: done')",
                timeout=90_000,
            )
            broken = page.locator("[data-testid=map-broken] .point.broken")
            assert await broken.count() >= 1
            hold = page.locator("[data-testid=map-broken] .point", has_text="await asyncio.sleep(hold)")
            assert "without items" in (await hold.get_attribute("title") or "")
            assert await page.locator("[data-testid=map-fixed] .point.broken").count() == 0
            assert await page.locator("[data-testid=map-fixed] .point.held").count() >= 1
            await hold.click()
            assert "without items" in await page.get_by_test_id("map-detail").inner_text()
            await page.locator("#map").screenshot(path=str(tmp_path / "map.png"))
        finally:
            await browser.close()


def test_demo_starts_the_app_with_aiomonitor_and_prints_the_talk(settings: Settings) -> None:
    monitor = free_ports(3)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "scripts.demo", "--port", str(port), "--check"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the demo's app too is in it: killed as a group if the demo hangs
        env={**os.environ, "DATABASE_URL": settings.database_url, "MONITOR_PORT": str(monitor)},
    )
    try:
        stdout, stderr = proc.communicate(timeout=90)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    run = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"http://127.0.0.1:{port}/" in run.stdout
    assert f"telnet 127.0.0.1 {monitor}" in run.stdout
    assert "The talk, in order" in run.stdout


def test_watch_prints_both_columns(spawn_app: Callable[..., App]) -> None:
    app = spawn_app()
    run = subprocess.run(
        [sys.executable, "-m", "scripts.watch", "--base-url", app.base, "--once"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert run.returncode == 0, run.stderr
    for text in (*VARIANTS, "orders without items", "Redis connections in use / max", "0 / 20"):
        assert text in run.stdout


def test_a_load_started_from_a_terminal_shows_on_the_page(spawn_app: Callable[..., App]) -> None:
    """``make load-disconnect`` from a terminal: the app's load panel (GET /api/load) shows its output and
    verdict (#16: the panel said "idle" while a terminal load ran). The page polls it always."""
    app = spawn_app()
    argv = [sys.executable, "-m", "scripts.load", "disconnect", "--variant", "fixed", "--requests", "30"]
    run = subprocess.run([*argv, "--base-url", app.base], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    status, shown = get(f"{app.base}/api/load")
    assert status == 200
    assert (shown["scenario"], shown["variant"], shown["verdict"], shown["returncode"]) == (
        "disconnect",
        "fixed",
        "held",
        0,
    ), shown
    assert not shown["running"] and any("orders_without_items" in line for line in shown["output"]), shown
    assert any(line.startswith("[") and "/30]" in line for line in shown["output"]), shown  # its progress too


@pytest.mark.parametrize("size", [(1280, 720), (1920, 1080)])
async def test_what_matters_is_above_the_fold(
    spawn_app: Callable[..., App], tmp_path: Path, size: tuple[int, int]
) -> None:
    """On a projector (1280x720 and 1920x1080), without scrolling: the three scenarios' headline numbers for
    both variants, the running load's progress and its verdict in large type, and each sparkline with what it
    plots (#16). A load started from a terminal fills the header; "Reset demo" brings every number to 0; in
    talk mode → runs the next step. The screenshots go to $SCREENSHOTS (app/static, for the README: set
    SCREENSHOTS=app/static to refresh them) or the test's own directory."""
    from playwright.async_api import async_playwright

    executable = chromium()
    app = spawn_app()
    width, height = size
    shots = Path(os.environ.get("SCREENSHOTS") or tmp_path)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": width, "height": height})
            await page.goto(f"{app.base}/")
            argv = [sys.executable, "-m", "scripts.load", "disconnect", "--variant", "broken", "--requests", "60"]
            load = await asyncio.create_subprocess_exec(*argv, "--base-url", app.base, cwd=ROOT)
            assert await load.wait() == 0
            verdict = page.get_by_test_id("load-verdict")
            await verdict.filter(has_text="VERDICT: reproduced").wait_for(timeout=15_000)

            async def inside(testid: str) -> None:
                box = await page.get_by_test_id(testid).bounding_box()
                assert box is not None, testid
                assert 0 <= box["x"] and box["x"] + box["width"] <= width, (testid, box)
                assert 0 <= box["y"] and box["y"] + box["height"] <= height, (testid, box)

            for scenario in ("disconnect", "pubsub", "shield"):
                for variant in VARIANTS:
                    await inside(f"failures-{scenario}-{variant}")
            await inside("load-state")
            await inside("load-verdict")
            assert "/60]" in await page.get_by_test_id("load-progress").inner_text()
            size_px = await verdict.evaluate("e => parseFloat(getComputedStyle(e).fontSize)")
            assert size_px >= 28
            labels = await page.locator(".spark-label").all_inner_texts()
            assert len(labels) == 6 and all("the last minute" in label for label in labels), labels
            await page.screenshot(path=str(shots / f"dashboard-{width}x{height}.png"))

            # "Reset demo" resets what is on screen: every headline number back to 0.
            await page.get_by_test_id("reset").click()
            zeros = " && ".join(
                f"document.querySelector('[data-testid=failures-{s}-{v}]').firstChild.textContent === '0'"
                for s in ("disconnect", "pubsub", "shield")
                for v in VARIANTS
            )
            await page.wait_for_function(zeros, timeout=15_000)

            # Talk mode: → runs step 1 (its load) and shows its code side by side, changed lines marked, with
            # its live figures; → again runs step 2.
            await page.keyboard.press("ArrowRight")
            await page.get_by_test_id("talk-title").filter(has_text=TALK[0].title).wait_for(timeout=5_000)
            status = page.get_by_test_id("talk-status")
            await status.filter(has_text="VERDICT: reproduced").wait_for(timeout=90_000)
            for variant in VARIANTS:
                await inside(f"talk-code-{variant}")
                await inside(f"talk-failures-{variant}")
            changed = {
                v: await page.locator(f"[data-testid=talk-code-{v}] .changed").all_inner_texts() for v in VARIANTS
            }
            assert any("_write_order(request, cur" in line for line in changed["broken"]), changed
            assert any("aiojobs.aiohttp.shield" in line for line in changed["fixed"]), changed
            assert int((await page.get_by_test_id("talk-failures-broken").inner_text()).split()[0]) > 0
            assert (await page.get_by_test_id("talk-failures-fixed").inner_text()).split()[0] == "0"
            await page.screenshot(path=str(shots / f"talk-{width}x{height}.png"))
            await page.keyboard.press("ArrowRight")
            await page.get_by_test_id("talk-title").filter(has_text=TALK[1].title).wait_for(timeout=5_000)
            await status.filter(has_text="VERDICT: held").wait_for(timeout=90_000)
        finally:
            await browser.close()
    for name in ("dashboard", "talk"):
        assert (shots / f"{name}-{width}x{height}.png").stat().st_size > 10_000
