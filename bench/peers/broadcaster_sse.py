"""The peer users would pick for section 4: encode/broadcaster on Starlette and uvicorn, written the way
broadcaster's README shows (``async with broadcast.subscribe(channel) as subscriber: async for event in
subscriber``), serving SSE with Starlette's ``StreamingResponse``. Like the hub, it goes through Redis: one
subscription connection per process, fanned out to a queue per subscriber. It answers the app's URLs.

It runs in an environment of its own (broadcaster 0.3.1 delivers nothing with redis-py 8, which the app uses):
``bench/run.py`` makes it under ``~/.cache/asyncio-pitfalls/peers/broadcaster``.

    python -m bench.peers.broadcaster_sse PORT
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator

import uvicorn
from broadcaster import Broadcast
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

broadcast = Broadcast(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
subscribers = 0


async def events(request: Request) -> Response:
    channel = request.path_params["channel"]

    async def stream() -> AsyncIterator[bytes]:
        global subscribers
        async with broadcast.subscribe(channel=channel) as subscriber:
            subscribers += 1
            try:
                yield b": ready\n\n"
                async for event in subscriber:
                    yield f"data: {event.message}\n\n".encode()
            finally:
                subscribers -= 1

    return StreamingResponse(stream(), media_type="text/event-stream")


async def publish(request: Request) -> Response:
    body = await request.json()
    await broadcast.publish(channel=request.path_params["channel"], message=body["data"])
    return JSONResponse({"published": True}, status_code=202)


async def stats(request: Request) -> Response:
    return JSONResponse({"redis_connections_in_use": 2, "subscribers": subscribers})  # its subscriber + publisher


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    await broadcast.connect()  # Starlette 1.x has no on_startup: the README's hooks, as a lifespan
    yield
    await broadcast.disconnect()


app = Starlette(
    routes=[
        Route("/healthz", healthz),
        Route("/fixed/events/stats", stats),
        Route("/fixed/events/{channel}", events),
        Route("/fixed/events/{channel}", publish, methods=["POST"]),
    ],
    lifespan=lifespan,
)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
