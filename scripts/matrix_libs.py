"""Standalone reproductions of the two library-dependent pitfalls for ``scripts.matrix``, run in a throwaway venv
holding one version of the library (so they use only what every version they are run with has):

    python scripts/matrix_libs.py aiohttp [--handler-cancellation]   a client hangs up mid-request
    python scripts/matrix_libs.py redis REDIS_URL                     one PubSub per request, never closed

Each prints one JSON object: ``status`` (``reproduced``: the pitfall can happen as the scenario shows it;
``held``: it cannot), ``detail``, and the figures.
"""

import asyncio
import json
import socket
import sys
from typing import Any

HOLD = 0.5  # the handler's slow step (the scenario's hold between the order and its items)
SUBSCRIBERS = 150


async def aiohttp_hang_up(cancel_on_hang_up):
    """The scenario's handler shape: write, hold, write. A client sends its request and hangs up 0.1 s in; is
    the handler cancelled at its hold (half-written order), or does it run to the end for nobody?"""
    import aiohttp
    from aiohttp import web

    seen = []

    async def handler(request):
        seen.append("order written")
        try:
            await asyncio.sleep(HOLD)
        except asyncio.CancelledError:
            seen.append("cancelled at the hold")
            raise
        seen.append("items written")
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/orders", handler)
    kwargs: dict[str, Any] = {"handler_cancellation": True} if cancel_on_hang_up else {}  # 3.9+ only
    runner = web.AppRunner(app, **kwargs)
    await runner.setup()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.close()  # the client hangs up
        await asyncio.sleep(HOLD + 0.3)
    finally:
        await runner.cleanup()
    cancelled = "cancelled at the hold" in seen
    return {
        "status": "reproduced" if cancelled else "held",
        "detail": (
            "the hang-up cancelled the handler at its await: half-written unless shielded"
            if cancelled
            else "the handler ran to the end for a client long gone (work nobody waits for)"
        ),
        "aiohttp": aiohttp.__version__,
        "handler": seen,
    }


async def redis_unclosed_pubsubs(url):
    """150 requests each subscribe on a PubSub of the default client and never close it: is the client's pool
    bounded (the next command fails: the broken variant's wall), or do connections pile up on the server?"""
    import redis
    from redis.asyncio import Redis

    name = f"matrix-{id(url)}"
    client = Redis.from_url(url, client_name=name)
    pool_max = client.connection_pool.max_connections
    held, error = [], None
    try:
        for i in range(SUBSCRIBERS):
            pubsub = client.pubsub()
            await pubsub.subscribe(f"matrix:{i}")
            held.append(pubsub)  # never closed
        await client.ping()
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    admin = Redis.from_url(url)
    try:
        clients = [c for c in await admin.client_list() if c.get("name") == name]
    finally:
        for pubsub in held:
            await (getattr(pubsub, "aclose", None) or pubsub.reset)()  # aclose since 5.0.1
        await client.connection_pool.disconnect()
        await admin.connection_pool.disconnect()
    bounded = pool_max < 2**31 - 1
    return {
        "status": "reproduced",  # either way one connection per live subscriber: the scenario's lesson
        "detail": (
            f"pool bounded at {pool_max}: after {len(held)} subscribers every call fails ({error})"
            if error
            else f"pool unbounded ({pool_max}): {len(held)} subscribers hold {len(clients)} server connections"
            if not bounded
            else f"pool of {pool_max}: {len(held)} subscribers, {len(clients)} server connections"
        ),
        "redis": redis.__version__,
        "pool_max": pool_max,
        "subscribed": len(held),
        "server_connections": len(clients),
        "error": error,
    }


def main():
    what = sys.argv[1]
    if what == "aiohttp":
        result = asyncio.run(aiohttp_hang_up("--handler-cancellation" in sys.argv))
    elif what == "redis":
        result = asyncio.run(redis_unclosed_pubsubs(sys.argv[2]))
    else:
        raise SystemExit(__doc__)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
