"""Section 3b: instructions per request, counted by callgrind. The wall-clock figures of this shared 2-core
machine move by ±20 % between runs; the instructions a server runs for the same requests move by about 1 %, so
a change to the app's own code shows here first. Kernel time (``send``, ``recv``, waking Postgres) is not in
it: the wall-clock sections have that. The server runs under ``valgrind --tool=callgrind`` (~50 times slower), its
counters zeroed after a warm-up and dumped after the counted requests (``callgrind_control``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from scripts import toolkit
from scripts._sse import subscribe

from .harness import BenchApp, tool

ORDER = {"customer": "callgrind", "items": [{"sku": "tea", "qty": 2}, {"sku": "cup", "qty": 1}]}
REQUESTS = (  # name, method, path: each counted alone, after a warm-up
    ("GET /ping (aiohttp and the app's middlewares)", "GET", "/ping"),
    ("broken order (POST /broken/orders?hold=0)", "POST", "/broken/orders?hold=0"),
    ("fixed order (POST /fixed/orders?hold=0)", "POST", "/fixed/orders?hold=0"),
)
MISSING = "valgrind not found: section 3b left out (Debian: apt-get install valgrind)"


class Counted(toolkit.AppProcess):
    """A server under callgrind: ``zero`` its counters, later ``dump`` them and read the total."""

    def __init__(self, log: Path | None, out: Path, server: tuple[str, ...]) -> None:
        callgrind = ("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg.%p")
        super().__init__(log, command=(*callgrind, *server))
        self.out = out

    def zero(self) -> None:
        subprocess.run(["callgrind_control", "-z", str(self.pid)], check=True, capture_output=True, timeout=60)

    def dump(self) -> int:
        """Instructions run since ``zero``."""
        subprocess.run(["callgrind_control", "-d", str(self.pid)], check=True, capture_output=True, timeout=60)
        newest = max(self.out.glob(f"cg.{self.pid}.*"), key=lambda p: p.stat().st_mtime)
        for line in newest.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
        raise RuntimeError(f"no total in {newest}")


async def instructions(app: BenchApp, *, smoke: bool) -> dict[str, Any]:
    """Per request: ``/ping`` and each variant's order; per delivery: the hub beside raw aiohttp SSE (300
    subscribers, 50 messages; a smoke run: 10 and 5, the hub alone). The bench's own app is stopped meanwhile
    (the roles' connection limits are shared)."""
    if tool("valgrind") is None or tool("callgrind_control") is None:
        print(MISSING, flush=True)
        return {"valgrind": MISSING}
    count, subscribers, messages = (30, 10, 5) if smoke else (1000, 300, 50)
    app.stop()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            per_request: dict[str, int] = {}
            async with counted(Counted(app.log, out, (sys.executable, "-m", "app", "--port"))) as server:
                for name, method, path in REQUESTS:
                    await _requests(server.base + path, method, count // 5)  # warm-up
                    await asyncio.to_thread(server.zero)
                    await _requests(server.base + path, method, count)
                    per_request[name] = await asyncio.to_thread(server.dump) // count
                hub = await _deliveries(server, subscribers, messages)
            raw = None
            if not smoke:  # (another valgrind start-up: ~10 s of make test's smoke run for a ratio)
                peer = (sys.executable, "-m", "bench.peers.raw_sse")
                async with counted(Counted(app.log, out, peer)) as server:
                    raw = await _deliveries(server, subscribers, messages)
    finally:
        await asyncio.to_thread(app.start)
    return {
        "requests": count,
        "per_request": per_request,
        "fanout": {"subscribers": subscribers, "messages": messages, "hub": hub, "raw aiohttp": raw},
        "hub_to_raw": round(hub / raw, 3) if raw else None,
    }


@contextlib.asynccontextmanager
async def counted(server: Counted) -> AsyncIterator[Counted]:
    """``server`` started (slowly: valgrind), and stopped at the end."""
    await asyncio.to_thread(server.start, 180)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


async def _requests(url: str, method: str, n: int, concurrency: int = 10) -> None:
    left = n
    async with aiohttp.ClientSession() as http:

        async def client() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                body = ORDER if method == "POST" else None
                async with http.request(method, url, json=body) as resp:
                    await resp.read()
                    if resp.status >= 300:
                        raise RuntimeError(f"{method} {url}: {resp.status}")

        await asyncio.gather(*(client() for _ in range(concurrency)))


async def _deliveries(server: Counted, subscribers: int, messages: int) -> int:
    """Instructions per message delivered: ``messages`` published one after the other to ``subscribers``
    streams, counted until every stream has read every one."""
    url = f"{server.base}/fixed/events/callgrind"
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as http:
        streams = []
        for _ in range(subscribers):
            status, stream = await subscribe(http, url)
            assert status == 200, stream
            streams.append(stream)

        async def publish(i: int) -> None:
            async with http.post(url, json={"data": json.dumps({"i": i})}) as resp:
                await resp.read()

        async def read(stream: Any, n: int) -> None:
            got = 0
            while got < n:
                event = await stream.next()
                if event.kind in ("eof", "cut"):
                    raise RuntimeError("a stream ended early")
                got += event.kind == "message"

        await publish(-1)  # warm-up: every stream reads one
        await asyncio.gather(*(read(s, 1) for s in streams))
        await asyncio.to_thread(server.zero)
        readers = [asyncio.create_task(read(s, messages)) for s in streams]
        for i in range(messages):
            await publish(i)
        await asyncio.gather(*readers)
        total = await asyncio.to_thread(server.dump)
        for stream in streams:
            stream.close()
    return total // (subscribers * messages)
