"""Run one pitfall of the cancellation gallery on a running app and print what happened.

    python -m scripts.pitfall <name> --variant broken|fixed [--base-url URL] [--json PATH]
    python -m scripts.pitfall --list

Prints ``VERDICT: reproduced`` (the trap sprang), ``VERDICT: held`` (it did not) or ``VERDICT: unexpected``, and
exits 0 only for the verdict expected of the variant. Loopback targets only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp

from app.settings import VARIANTS

from ._common import EXPECTED, cannot_reach, require_loopback


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.pitfall", description=__doc__.split("\n")[0])
    p.add_argument("name", nargs="?", help="the pitfall, e.g. swallowed-cancel (see --list)")
    p.add_argument("--variant", choices=VARIANTS)
    p.add_argument("--base-url", default="http://127.0.0.1:8080", help="a running app (loopback only)")
    p.add_argument("--json", type=Path, help="write the result as JSON here")
    p.add_argument("--list", action="store_true", help="list the pitfalls")
    args = p.parse_args(argv)
    if not args.list and (args.name is None or args.variant is None):
        p.error("give a pitfall name and --variant (or --list)")
    require_loopback(args.base_url)
    return asyncio.run(run(args))


async def run(args: argparse.Namespace) -> int:
    base = args.base_url.rstrip("/")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        try:
            if args.list:
                async with http.get(f"{base}/fixed/pitfalls") as resp:
                    for name, line in (await resp.json()).items():
                        print(f"{name:<22} {line}")
                return 0
            async with http.get(f"{base}/{args.variant}/pitfalls/{args.name}") as resp:
                result: dict[str, Any] = await resp.json()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            return cannot_reach(base, exc)
    if status != 200:
        print(result.get("error", result), file=sys.stderr)
        return 2
    print(f"{args.name} / {args.variant} on Python {result['python']}: {result['summary']}")
    for key, value in result.items():
        if key not in ("pitfall", "variant", "python", "summary", "trap"):
            print(f"  {key:<24} {value}")
    verdict = "reproduced" if result["trap"] else "held"
    print(f"VERDICT: {verdict}")
    if args.json is not None:
        args.json.write_text(json.dumps({**result, "verdict": verdict}, indent=2) + "\n")
    return 0 if verdict == EXPECTED[args.variant] else 1


if __name__ == "__main__":
    sys.exit(main())
