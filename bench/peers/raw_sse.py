"""The peer for section 4: a raw aiohttp SSE server, written the plain way (an ``asyncio.Queue`` per
subscriber, the publisher puts into each, one write per event). No Redis, no bounds, no heartbeats, no
shutdown: in-process queues only, the floor that a hub in front of Redis can approach. It answers the app's
URLs, so the bench drives both the same way.

    python -m bench.peers.raw_sse PORT
"""

from __future__ import annotations

import asyncio
import sys
from collections import defaultdict

from aiohttp import web

CHANNELS: defaultdict[str, set[asyncio.Queue[str]]] = defaultdict(set)


async def events(request: web.Request) -> web.StreamResponse:
    queue: asyncio.Queue[str] = asyncio.Queue()
    channel = request.match_info["channel"]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    CHANNELS[channel].add(queue)
    try:
        await response.write(b": ready\n\n")
        while True:
            data = await queue.get()
            await response.write(f"data: {data}\n\n".encode())
    finally:
        CHANNELS[channel].discard(queue)


async def publish(request: web.Request) -> web.Response:
    data = (await request.json())["data"]
    receivers = CHANNELS[request.match_info["channel"]]
    for queue in receivers:
        queue.put_nowait(data)
    return web.json_response({"published": True, "receivers": len(receivers)}, status=202)


async def stats(request: web.Request) -> web.Response:
    return web.json_response({"redis_connections_in_use": 0, "subscribers": sum(map(len, CHANNELS.values()))})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def main() -> None:
    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/fixed/events/stats", stats)
    app.router.add_get("/fixed/events/{channel}", events)
    app.router.add_post("/fixed/events/{channel}", publish)
    # A hang-up cancels the stream's handler (or it would wait on its queue for good), and a stop does not
    # wait a minute for streams that never end by themselves.
    web.run_app(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=1,
        print=lambda _: None,
    )


if __name__ == "__main__":
    main()
