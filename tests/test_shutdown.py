"""SIGTERM with clients that stopped reading: the process exits within its shutdown budget (README,
Guarantees), and a stalled stream is cut after its send deadline even without a shutdown.

A stalled reader is a raw socket with a tiny receive buffer that asks for a stream and never reads: once the
kernel buffers on both sides are full, the server's ``response.write()`` waits for a drain that never comes.
Before: nothing bounded that wait; ``bye`` never reached the handler, and aiohttp waited out its shutdown
timeout twice before cancelling it."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from tests.helpers import App, get, poll

PAYLOAD = "x" * 60_000


@contextmanager
def stalled_readers(base: str, path: str, n: int) -> Iterator[list[socket.socket]]:
    port = int(base.rsplit(":", 1)[1])
    socks = []
    try:
        for _ in range(n):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", port))
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode())
            socks.append(sock)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def publish(base: str, path: str, n: int) -> None:
    body = json.dumps({"data": PAYLOAD}).encode()
    for _ in range(n):
        request = urllib.request.Request(
            base + path, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        urllib.request.urlopen(request, timeout=10).read()


@asynccontextmanager
async def stalled(app: App, variant: str, n: int) -> AsyncIterator[None]:
    """``n`` stalled readers on ``variant``'s channel ``stall``, each with its handler stuck in a write."""
    base = app.base
    with stalled_readers(base, f"/{variant}/events/stall", n):
        await poll(
            lambda: asyncio.to_thread(get, f"{base}/{variant}/events/stats"), lambda r: r[1]["subscribers"] == n
        )
        # Enough data to fill every buffer on the way (fixed: until the inboxes drop: nobody is reading them).
        for _ in range(40):
            await asyncio.to_thread(publish, base, f"/{variant}/events/stall", 10)
            if (
                variant == "fixed"
                and (await asyncio.to_thread(get, f"{base}/api/state"))[1]["variants"]["fixed"]["invariants"][
                    "messages_dropped"
                ]
                >= n
            ):
                break
        else:
            assert variant == "broken", "the stalled readers never filled their buffers"
        yield


SHUTDOWN_TIMEOUT = 10.0


async def test_sigterm_with_stalled_readers_exits_within_budget(spawn_app: Callable[..., App]) -> None:
    """10 stalled readers on fixed and 5 on broken, then SIGTERM. The budget (README): streams get one second
    for their ``bye``, then are cut; nothing here needs the shutdown timeout at all."""
    app = spawn_app(SHUTDOWN_TIMEOUT=str(SHUTDOWN_TIMEOUT), SSE_SEND_TIMEOUT="300", SSE_HEARTBEAT="300")
    async with stalled(app, "fixed", 10), stalled(app, "broken", 5):
        took = await asyncio.to_thread(app.stop, signal.SIGTERM, 4 * SHUTDOWN_TIMEOUT)
    assert took < SHUTDOWN_TIMEOUT, f"SIGTERM -> exit took {took:.1f} s with 15 stalled readers"


async def test_a_stalled_stream_is_cut_after_its_send_deadline(spawn_app: Callable[..., App]) -> None:
    app = spawn_app(SSE_SEND_TIMEOUT="1", SSE_HEARTBEAT="300")
    async with stalled(app, "fixed", 1):
        _, stats = await poll(
            lambda: asyncio.to_thread(get, f"{app.base}/fixed/events/stats"),
            lambda r: r[1]["subscribers"] == 0,
            timeout=15,
        )
    assert stats["subscribers"] == 0, "a client that stopped reading kept its stream (and its handler) forever"


async def test_sigterm_drains_first_when_asked(spawn_app: Callable[..., App]) -> None:
    """DRAIN_SECONDS (compose sets it; `make topology` shows why): after SIGTERM the app still serves for that
    long, but /healthz says 503 ``draining``, so a proxy's health check takes this process out before it closes
    its socket. Before: SIGTERM closed the socket and the idle keep-alive connections at once, and the requests
    caddy sent there meanwhile became 502s (`make topology --proxy bare` still shows them)."""
    app = spawn_app(DRAIN_SECONDS="30")
    assert app.proc is not None
    app.proc.send_signal(signal.SIGTERM)

    async def health() -> tuple[int, Any]:
        return await asyncio.to_thread(get, f"{app.base}/healthz")

    status, body = await poll(health, lambda r: r[0] == 503, timeout=10)
    assert (status, body["status"]) == (503, "draining")
    assert (await asyncio.to_thread(get, f"{app.base}/fixed/orders/stats"))[0] == 200  # still served
    assert app.running
    app.proc.send_signal(signal.SIGTERM)  # a second signal stops at once, as without a drain
    await asyncio.to_thread(app.proc.wait, 10)
