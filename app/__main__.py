"""``python -m app [--host H] [--port N]`` serves; ``python -m app migrate [--rollback N]`` migrates."""

from __future__ import annotations

import argparse
import gc
import logging

import psycopg2
from aiohttp import web

from . import ops
from .dashboard import port_taken
from .errors import server_said
from .factory import create_app
from .migrate import migrate, rollback
from .settings import Settings, mask


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    parser.add_argument("command", nargs="?", choices=["serve", "migrate"], default="serve")
    parser.add_argument("--host", help="address to bind (default $APP_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to bind (default $APP_PORT or 8080)")
    parser.add_argument("--rollback", type=int, metavar="N", help="migrate: undo the last N migrations")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = Settings.from_env(**overrides)

    if args.command == "migrate":
        try:
            done = (
                rollback(settings.database_url, args.rollback) if args.rollback else migrate(settings.database_url)
            )
        except psycopg2.OperationalError as exc:
            raise SystemExit(
                f"cannot reach Postgres at {mask(settings.database_url)}: {server_said(exc)}\n"
                "start it (README, 'The two commands'): "
                "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
            ) from None
        verb = "rolled back" if args.rollback else "applied"
        print(f"{mask(settings.database_url)}: {verb} {', '.join(done) or 'nothing (up to date)'}")
        return
    taken = not settings.reuse_port and port_taken(settings.host, settings.port)  # one line, not a traceback
    if taken:
        raise SystemExit(
            f"cannot listen on {settings.host}:{settings.port}: {taken} (another `make run`?); "
            f"use another port: APP_PORT={settings.port + 1} make run"
        )

    loop = None
    if settings.uvloop:
        try:
            import uvloop
        except ImportError:
            raise SystemExit("UVLOOP=1 needs uvloop: .venv/bin/pip install -e '.[speed]'") from None
        loop = uvloop.new_event_loop()
    app = create_app(settings)
    app.on_startup.append(ops.drain_on_signals)  # SIGTERM drains first when DRAIN_SECONDS > 0
    app.on_startup.append(collect_less)  # last: after every resource is made
    # handler_cancellation=True: a client that hangs up cancels its handler at the current await. aiohttp did
    # that always up to 3.8.1 and makes it this option since 3.9 (docs/MATRIX.md); production stacks (and
    # aiohttp's own test server) run with it, and it is where these pitfalls live. The fixed variants are
    # written to be correct with it on.
    web.run_app(
        app,
        handle_signals=False,
        loop=loop,
        reuse_port=settings.reuse_port or None,
        backlog=settings.listen_backlog,
        host=settings.host,
        port=settings.port,
        handler_cancellation=True,
        shutdown_timeout=settings.shutdown_timeout,
        access_log=logging.getLogger("aiohttp.access") if settings.access_log else None,
        print=lambda _: print(
            f"asyncio-pitfalls on http://{settings.host}:{settings.port} "
            f"(handler_cancellation=True, db {mask(settings.database_url)}, redis {mask(settings.redis_url)})",
            flush=True,
        ),
    )


# A young collection once tracked objects made exceed those freed by this many (CPython's default: 700). Each
# stream keeps a few short-lived objects alive (the future it waits on, ...), so every young collection found
# thousands of them alive and moved them on; the older generations filled at once, and at 5,000 subscribers a
# full collection (~150 ms, every stream stopped) came about every second: a quarter of the fan-out's CPU went
# to the collector (bench/RESULTS.md, 2b and 4).
YOUNG_COLLECTION_AFTER = 10_000


async def collect_less(app: web.Application) -> None:
    """What start-up made (modules, routes, settings, clients: tens of thousands of objects that live as long as
    the process) leaves the garbage collector's view, and young collections come less often. A full collection
    walks every object it tracks while the loop, every stream with it, waits. A frozen object is never
    collected: a client that ``/api/reset`` replaces stays behind once. A test process, which builds many apps,
    keeps CPython's defaults (``create_app`` does not call this)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_AFTER, *gc.get_threshold()[1:])


if __name__ == "__main__":
    main()
