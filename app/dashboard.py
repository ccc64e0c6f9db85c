"""Conference mode: the live dashboard at ``/``, its event stream, and load runs started from it.

The figures reach the page over Server-Sent Events through the app's own *fixed* fan-out: a publisher task
puts a snapshot on a Redis channel twice a second, and each open dashboard is one more subscriber of the
fixed variant's hub. Loads run as ``python -m scripts.load`` child processes, one at a time, loopback only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from . import ops, sse, tasks
from .clients import client_address
from .errors import json_error
from .keys import (
    dashboards_key,
    explorer_key,
    hub_key,
    loads_key,
    redis_key,
    scenarios_key,
    settings_key,
    variants_key,
)
from .loads import LoadRunner
from .scenario import ROOT
from .scenarios import MAP_TARGETS
from .settings import VARIANTS
from .validation import json_object

log = logging.getLogger("app.dashboard")

STATIC = Path(__file__).resolve().parent / "static"
EVERY = 0.5  # seconds between snapshots


def channel(app: web.Application) -> str:
    """This process's own channel: with several processes, a dashboard shows the one it is connected to."""
    return f"{app[settings_key].namespace}:dashboard:{os.getpid()}"


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def state_stream(request: web.Request) -> web.StreamResponse:
    """The snapshots, as an event stream, through the fixed variant's hub (bounded inbox, heartbeats, bye)."""
    fixed = request.app[variants_key]["fixed"]
    live, settings = request.app[dashboards_key], request.app[settings_key]
    timeout = settings.sse_send_timeout
    with live.registered(request, client_address(request)):
        async with (
            fixed[hub_key].subscribe(channel(request.app)) as inbox,
            sse.stream(request, send_timeout=timeout) as stream,
        ):
            await stream.send(sse.Event("message", json.dumps(await ops.snapshot(request.app))))
            async for batch in inbox.batches(heartbeat=settings.sse_heartbeat):
                await stream.send(*batch)
    return stream.response


async def publisher_ctx(app: web.Application) -> AsyncIterator[None]:
    """Publish a snapshot every EVERY seconds while at least one dashboard is open."""

    async def publish() -> None:
        while True:
            await asyncio.sleep(EVERY)
            if not app[dashboards_key]:
                continue
            try:
                snapshot = json.dumps(await ops.snapshot(app))
                await app[variants_key]["fixed"][redis_key].client.publish(channel(app), snapshot)
            except Exception as exc:  # Redis or Postgres away: try again next tick; the page shows staleness
                log.warning("dashboard snapshot not published: %s", type(exc).__name__)

    task = asyncio.create_task(publish(), name="dashboard-publisher")
    yield
    await tasks.stop(task)


async def start_load(request: web.Request) -> web.Response:
    if not ops.operator_allowed(request):
        return json_error(403, "loads start from loopback or with the API token only")
    body = await json_object(request)
    scenario, variant = body.get("scenario"), body.get("variant")
    served = {s.name: s for s in request.app[scenarios_key]}
    chosen = served.get(scenario) if isinstance(scenario, str) else None
    ladder = variant == "ladder" and chosen is not None and bool(chosen.rungs)  # all its steps, one load
    if chosen is None or chosen.load is None or not (variant in VARIANTS or ladder):
        loads = ", ".join(name for name, s in served.items() if s.load)
        return json_error(
            400, f"'scenario' must be one of {loads} and 'variant' one of {', '.join(VARIANTS)} (or 'ladder')"
        )
    runner = request.app[loads_key]
    if runner.running:
        return json_error(409, f"a load is running already: {runner.scenario} / {runner.variant}")
    # This very server, over loopback: the port the request came in on.
    port = request.transport.get_extra_info("sockname")[1] if request.transport else request.app[settings_key].port
    base = f"http://127.0.0.1:{port}"
    if ladder:
        runner.launch(f"{chosen.name} ladder", None, ["-m", "scripts.ladder", chosen.name, "--base-url", base])
    else:
        runner.start(chosen.name, str(variant), base, chosen.load.dashboard_args)
    return web.json_response(runner.status(), status=202)


async def load_report(request: web.Request) -> web.Response:
    """A load started from a terminal (``scripts.load``) reports what it prints, so the page shows it too."""
    if not ops.operator_allowed(request):
        return json_error(403, "loads report from loopback or with the API token only")
    body = await json_object(request)
    run, scenario, variant = body.get("run"), body.get("scenario"), body.get("variant")
    lines, code = body.get("lines"), body.get("code")
    served = {s.name for s in request.app[scenarios_key] if s.load}
    if (
        not isinstance(run, str)
        or len(run) > 64
        or not isinstance(scenario, str)
        or scenario not in served
        or variant not in VARIANTS
        or not isinstance(lines, list)
        or len(lines) > 200
        or not all(isinstance(line, str) and len(line) <= 1000 for line in lines)
        or not (code is None or (isinstance(code, int) and not isinstance(code, bool)))
    ):
        return json_error(400, "expected run, scenario, variant, lines (at most 200 strings) and code")
    if not request.app[loads_key].report(run, scenario, variant, lines, code if body.get("done") else None):
        return json_error(409, "the page's own load is running")
    return web.json_response({"shown": True}, status=202)


async def load_status(request: web.Request) -> web.Response:
    return web.json_response(request.app[loads_key].status())


async def loads_ctx(app: web.Application) -> AsyncIterator[None]:
    app[loads_key] = LoadRunner(ROOT)
    app[explorer_key] = LoadRunner(ROOT)
    yield
    await app[explorer_key].close()
    await app[loads_key].close()


# --- the cancellation map panel: ``python -m scripts.explore`` as a child, one at a time ------------------

MAP_JSON = Path(tempfile.gettempdir()) / f"pitfalls-map-{os.getpid()}.json"
MAP_SOURCES = ("app/", "scripts/")  # the only files whose lines the page may read


async def start_map(request: web.Request) -> web.Response:
    if not ops.operator_allowed(request):
        return json_error(403, "maps start from loopback or with the API token only")
    target = (await json_object(request)).get("target")
    if target not in MAP_TARGETS:
        return json_error(400, f"'target' must be one of {', '.join(MAP_TARGETS)}")
    runner = request.app[explorer_key]
    if runner.running:
        return json_error(409, f"a map is being made already: {runner.scenario}")
    MAP_JSON.unlink(missing_ok=True)
    runner.launch(target, None, ["-m", "scripts.explore", target, "--json", str(MAP_JSON)])
    return web.json_response({"target": target, "running": True}, status=202)


async def map_status(request: web.Request) -> web.Response:
    """The last map: per variant its points (file:line, held or not, violations) and the source lines around
    them, so the page can show the code with each suspension point marked."""
    runner = request.app[explorer_key]
    maps = json.loads(MAP_JSON.read_text()) if not runner.running and MAP_JSON.exists() else None
    files: dict[str, list[str]] = {}
    for where in {t["where"] for m in maps or () for t in m["trials"] if t["where"]}:
        path = where.rsplit(":", 1)[0]
        if path.startswith(MAP_SOURCES) and path not in files and (ROOT / path).is_file():
            files[path] = (ROOT / path).read_text().splitlines()
    return web.json_response(
        {
            "targets": list(MAP_TARGETS),
            "running": runner.running,
            "target": runner.scenario,
            "returncode": runner.returncode,
            "maps": maps,
            "files": files,
        }
    )


async def monitor_ctx(app: web.Application) -> AsyncIterator[None]:
    """aiomonitor in demo mode, on loopback only: list the live tasks, show a task's stack, cancel one."""
    settings = app[settings_key]
    if not settings.demo:
        yield
        return
    import aiomonitor

    port = settings.monitor_port
    taken = [p for p in (port, port + 1, port + 2) if port_taken("127.0.0.1", p)]
    if taken:  # aiomonitor's own thread would fail to bind, and start_monitor would wait for it forever
        log.error("aiomonitor not started: port %s taken (it needs MONITOR_PORT and the next two)", taken[0])
        yield
        return
    monitor = aiomonitor.start_monitor(
        asyncio.get_running_loop(),
        host="127.0.0.1",
        port=port,
        webui_port=port + 1,
        console_port=port + 2,
        hook_task_factory=True,
    )
    log.info("aiomonitor: telnet 127.0.0.1 %d, web UI http://127.0.0.1:%d/", port, port + 1)
    yield
    monitor.close()


def port_taken(host: str, port: int) -> str | None:
    """Why nothing can listen on ``host:port`` right now (None: something can)."""
    try:
        with socket.create_server((host, port)):
            return None
    except OSError as exc:
        return os.strerror(exc.errno) if exc.errno else str(exc)


def setup(app: web.Application) -> None:
    app[dashboards_key] = sse.Live()
    # On the root app, whose clean-up runs before the variants': guarded, so a failure cannot skip theirs.
    app.cleanup_ctx.append(tasks.guarded(monitor_ctx))
    app.cleanup_ctx.append(tasks.guarded(loads_ctx))  # closes last: a running load is stopped after the publisher
    app.cleanup_ctx.append(tasks.guarded(publisher_ctx))
    app.add_routes(
        [
            web.get("/", index),
            web.static("/static", STATIC),
            web.get("/api/state/stream", state_stream),
            web.post("/api/load", start_load),
            web.get("/api/load", load_status),
            web.post("/api/load/report", load_report),
            web.post("/api/explore", start_map),
            web.get("/api/explore", map_status),
        ]
    )
