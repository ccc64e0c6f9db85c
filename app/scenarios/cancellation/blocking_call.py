"""blocking-call: a synchronous call in a handler (``time.sleep``, a sync database driver, a big
``json.dumps``) stops the event loop: every other request of the process waits, ``/healthz`` included.

Fix: the async driver, or ``await loop.run_in_executor(None, ...)`` (``asyncio.to_thread``) for what has none.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from typing import Any

from ... import tasks
from ...scenario import Pitfall, server_url

BLOCK = 0.5


def _slow_sync_call() -> None:
    time.sleep(BLOCK)  # a sync driver's query, a CPU-heavy step...


async def broken_step() -> None:
    """The loop is blocked 0.5 s: a concurrent /healthz waits the whole time, and so does everything else."""
    _slow_sync_call()


async def fixed_step() -> None:
    """The call runs in a thread: the loop keeps serving; /healthz answers in milliseconds."""
    await asyncio.get_running_loop().run_in_executor(None, _slow_sync_call)


async def measure(step: Any) -> dict[str, Any]:
    """While ``step`` runs: a ticker measures the longest stall of the loop, and a real /healthz request to
    this same server, sent from a thread (it does not need the loop to send), measures what a client sees.
    The ticker is stopped however the run ends (a hang-up included), and the probe goes to the address the
    server is bound to, never to one taken from the request (its Host header is the client's to choose)."""
    gaps: list[float] = []
    ticking = asyncio.Event()

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            ticking.set()
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker(), name="blocking-call-ticker")
    probe: asyncio.Future[float] | None = None
    try:
        await ticking.wait()
        probe = asyncio.get_running_loop().run_in_executor(None, _healthz_latency, server_url.get() + "/healthz")
        await step()
        latency = await probe
        await asyncio.sleep(0.05)  # the ticker's next turn records the stall, if there was one
    finally:
        if probe is not None and not probe.done():  # a hang-up: the thread ends on its own (10 s at most)
            probe.add_done_callback(lambda f: f.cancelled() or f.exception())
        await tasks.stop(tick)
    stall = max(gaps, default=0.0)
    trap = stall >= BLOCK * 0.8
    return {
        "trap": trap,
        "summary": f"event loop stalled {stall * 1000:.0f} ms; a concurrent /healthz took {latency * 1000:.0f} ms",
        "blocking_call_s": BLOCK,
        "loop_stall_ms": round(stall * 1000, 1),
        "healthz_latency_ms": round(latency * 1000, 1),
    }


def _healthz_latency(url: str) -> float:
    """How long /healthz takes to answer, whatever it answers (a 503 is an answer too: closed, and timed)."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            resp.read()
    except urllib.error.HTTPError as exc:
        exc.close()
    return time.monotonic() - started


PITFALL = Pitfall("blocking-call", broken_step, fixed_step, measure)
