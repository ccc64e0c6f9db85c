"""Conference mode: start the service, wait until it is healthy, print the dashboard URL and the talk's script.

    python -m scripts.demo [--compose] [--port 8080] [--check]

Local (default): migrates, then runs ``python -m app`` with ``DEMO=1`` (aiomonitor on 127.0.0.1:20101) until
Ctrl-C. ``--compose``: ``docker compose up`` instead. ``--check``: start, verify, print, stop (for tests).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import textwrap
import urllib.request

from app.talk import TALK

from . import compose
from .toolkit import AppProcess, wait_healthy

SCRIPT = """
  Dashboard   {base}/        (F11 for full screen; large type, works offline)
  Talk mode   {base}/#talk   (or press t: → runs each step below from the page, ← goes back)
  Terminal    make watch BASE_URL={base}
{monitor}
  The talk, in order:
{talk}{stop}
"""


def talk() -> str:
    """The steps of ``app.talk.TALK``, as the README lists them, wrapped for a terminal."""
    lines = []
    for i, step in enumerate(TALK, 1):
        text = f"{i}. {step.title}: {step.say.replace('`', '')}"
        lines.append(textwrap.fill(text, 110, initial_indent="   ", subsequent_indent="      "))
    return "\n".join(lines)


def free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.demo", description=__doc__.split("\n")[0])
    p.add_argument("--compose", action="store_true", help="run the docker compose stack instead")
    p.add_argument("--port", type=int, default=int(os.environ.get("APP_PORT", "8080")))
    p.add_argument("--check", action="store_true", help="start, verify, print, stop")
    args = p.parse_args(argv)
    base = f"http://127.0.0.1:{args.port}"

    if args.compose:
        command = compose.find()
        if isinstance(command, str):
            print(f"{command}: {compose.INSTEAD}", file=sys.stderr)
            return 2
        subprocess.run([*command, "up", "--build", "-d"], check=True)
        try:
            wait_healthy(base, 180)
        except RuntimeError as exc:
            raise SystemExit(str(exc)) from None
        print(SCRIPT.format(base=base, monitor="", talk=talk(), stop="\n  Stop it with: make down"))
        return 0

    if not free(args.port):
        print(f"port {args.port} is taken (a running `make run`?): stop it, or use APP_PORT=8081 make demo")
        return 2
    monitor_port = int(os.environ.get("MONITOR_PORT", "20101"))
    app = AppProcess(None, {"DEMO": "1", "MONITOR_PORT": str(monitor_port)}, port=args.port)
    app.migrate(quiet=False)
    try:
        try:
            app.start()
        except RuntimeError as exc:
            raise SystemExit(str(exc)) from None
        monitor = (
            f"  Inside     telnet 127.0.0.1 {monitor_port}  (aiomonitor: ps, where <task>, cancel <task>)\n"
            f"             web UI http://127.0.0.1:{monitor_port + 1}/\n"
        )
        print(SCRIPT.format(base=base, monitor=monitor, talk=talk(), stop="\n  Ctrl-C ends the demo."), flush=True)
        if args.check:
            with urllib.request.urlopen(f"http://127.0.0.1:{monitor_port + 1}/", timeout=5) as resp:
                return 0 if resp.status == 200 else 1  # aiomonitor's web UI answers
        assert app.proc is not None
        return app.proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        app.stop()


if __name__ == "__main__":
    sys.exit(main())
