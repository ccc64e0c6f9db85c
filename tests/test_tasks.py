"""Every task the app owns is stopped with a bound, cancelled again if a cancel was lost, and never at the
cost of the caller's own cancellation; a failing root clean-up cannot skip the variants' drain."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import pytest
from aiohttp.test_utils import TestClient

from app import cancelmap, tasks
from app.keys import loads_key, probe_key, variants_key
from app.settings import Settings
from scripts import _plumbing
from tests.helpers import TRANSFER as GOOD
from tests.helpers import sql


async def stubborn(lost: int, ended: list[str]) -> None:
    """A task whose first ``lost`` cancels are swallowed, as Python 3.11's ``wait_for`` inside redis-py or
    aiopg does when a cancel lands with a result."""
    for _ in range(lost):
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
    try:
        await asyncio.sleep(3600)
    finally:
        ended.append("ended")


async def test_stop_cancels_again_when_a_cancel_was_lost() -> None:
    ended: list[str] = []
    task = asyncio.create_task(stubborn(2, ended))
    await asyncio.sleep(0)
    assert await tasks.stop(task, timeout=5, recancel_every=0.05)
    assert ended == ["ended"] and task.cancelled()


async def test_stop_gives_up_after_its_bound_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    ended: list[str] = []
    task = asyncio.create_task(stubborn(10**6, ended))
    await asyncio.sleep(0)
    assert not await tasks.stop(task, timeout=0.2, recancel_every=0.05)
    assert "did not stop within" in caplog.text
    task.get_coro().close()  # end the test's own stubborn task


async def test_stop_lets_the_callers_cancellation_through() -> None:
    """``task.cancel(); with suppress(CancelledError): await task`` swallows the caller's cancel too. And the
    task is asked once more on the way out: before, a task that had lost the first cancel ran on for good
    once its stopper was cancelled (the cancellation map, depth 2, on cancel-then-wait's clean-up)."""
    ended: list[str] = []
    inner = asyncio.create_task(stubborn(1, ended))
    await asyncio.sleep(0)
    outer = asyncio.create_task(tasks.stop(inner, timeout=5, recancel_every=10))
    await asyncio.sleep(0.05)  # outer is waiting: inner swallowed the first cancel
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    await asyncio.wait({inner}, timeout=2)
    assert ended == ["ended"]  # asked again by stop itself: it ends


async def test_stop_logs_the_tasks_failure_instead_of_raising(caplog: pytest.LogCaptureFixture) -> None:
    async def fails() -> None:
        raise TimeoutError("load ran past its bound")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    assert await tasks.stop(task)
    assert "load ran past its bound" in caplog.text


@pytest.mark.parametrize("units", [_plumbing.publisher_close, _plumbing.loads_close], ids=["publisher", "loads"])
async def test_closing_cancelled_at_every_point(units: Callable[[], _plumbing.Units]) -> None:
    """The dashboard publisher's clean-up and ``LoadRunner.close``, each cancelled at every suspension point
    (depth 2: again inside the cleanup the first cancel started). Before: ``suppress(CancelledError)``
    around ``await task`` swallowed the caller's cancel at the first point."""
    trials = await units().explore(depth=2)
    assert trials and all(t.held for t in trials), cancelmap.table(trials)


async def test_a_failing_root_cleanup_does_not_skip_the_fixed_drain(
    client: TestClient, settings: Settings
) -> None:
    """A dashboard load that ended in ``TimeoutError`` made the root clean-up raise; aiohttp then skipped the
    variants' clean-up, so the scheduler never drained: an accepted transfer was lost at shutdown."""
    app = client.app
    assert app is not None

    async def timed_out() -> None:
        raise TimeoutError("load ran past LOAD_TIMEOUT")

    runner = app[loads_key]
    runner.task = asyncio.create_task(timed_out())
    resp = await client.post("/fixed/transfers?hold=0.5", json=GOOD)
    assert resp.status == 202
    await app[probe_key].reached("fixed.transfer", 1)  # inside its transaction
    assert app[variants_key]["fixed"] is not None
    await client.close()  # shutdown + clean-up, as at SIGTERM
    assert sql(settings.database_url, "SELECT status FROM transfers WHERE variant = 'fixed'") == [("committed",)]
