"""Drive one scenario's load against a running service and print a verdict.

    python -m scripts.load disconnect --variant broken|fixed [--base-url URL] [--requests N] [--concurrency C]
                                      [--json PATH]

Prints progress while it runs, then ``VERDICT: reproduced`` (the broken failure happened), ``VERDICT: held``
(the fixed invariant held) or ``VERDICT: unexpected``; exits 0 only for the verdict expected of the variant.
Every target must be a loopback address; request count and run time are bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from pathlib import Path
from types import ModuleType

import aiohttp

from app.scenarios import SCENARIOS as ALL
from app.settings import VARIANTS

from ._common import cannot_reach, fetch_json, require_loopback
from ._report import reported

# Every scenario with a ``Load`` in its description, driven by this package's ``load_<name>`` module.
SCENARIOS = {s.name: s for s in ALL if s.load is not None}


def driver(name: str) -> ModuleType:
    return importlib.import_module(f"{__package__}.load_{name}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m scripts.load", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="scenario", required=True, metavar="scenario")
    for name in SCENARIOS:
        sp = sub.add_parser(name, help=SCENARIOS[name].title)
        sp.add_argument("--variant", choices=VARIANTS, required=True)
        sp.add_argument("--base-url", default="http://127.0.0.1:8080", help="a running app (loopback only)")
        sp.add_argument("--requests", type=int, help="requests (pubsub: subscribers) in all; max 10000")
        sp.add_argument("--concurrency", type=int, default=20, help="requests in flight at once (max 500)")
        sp.add_argument("--max-seconds", type=float, default=60, help="stop starting requests after this")
        sp.add_argument("--seed", type=int, default=None, help="random seed, for a repeatable run")
        sp.add_argument("--reset", action="store_true", help="POST /api/reset before the run")
        sp.add_argument("--json", type=Path, help="write the report as JSON here")
        driver(name).add_arguments(sp)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    load = SCENARIOS[args.scenario].load
    assert load is not None
    args.requests = args.requests or load.requests
    if not 1 <= args.requests <= 10_000 or not 1 <= args.concurrency <= 500 or not 0 < args.max_seconds <= 600:
        print("--requests 1..10000, --concurrency 1..500, --max-seconds up to 600", file=sys.stderr)
        return 2
    require_loopback(args.base_url)
    return asyncio.run(run_reported(args))


async def run_reported(args: argparse.Namespace) -> int:
    """The scenario's driver, its output shown on the app's dashboard too (see ``_report``); ``--reset``
    first, for every scenario (before: only disconnect's driver did it, the others ignored it)."""
    if args.reset and not getattr(args, "spawn_app", False) and not await reset(args.base_url):
        return 2
    async with reported(args.base_url, args.scenario, args.variant) as code:
        code[0] = await driver(args.scenario).run(args)
    return code[0]


async def reset(base_url: str) -> bool:
    """POST /api/reset to a running app (the spawned app of ``shield --spawn-app`` starts empty anyway)."""
    try:
        async with aiohttp.ClientSession() as http:
            await fetch_json(http, f"{base_url.rstrip('/')}/api/reset", "POST")
    except (aiohttp.ClientError, TimeoutError) as exc:
        cannot_reach(base_url, exc)  # says what to do
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
