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
import urllib.request

from . import compose
from .toolkit import AppProcess, wait_healthy

SCRIPT = """
  Dashboard   {base}/        (F11 for full screen; large type, works offline)
  Terminal    make watch BASE_URL={base}
{monitor}
  The talk, in order — click, then say:
   1. Scenario 1, BROKEN, "Run load": 400 requests, half of them hung up. Watch "orders without items"
      climb (half-written orders) and "server backends" hit the role's limit of 30 — then every broken request
      is refused. /healthz stays green: the fixed side has its own role.
   2. Scenario 1, FIXED, "Run load": the same load. 0 orders without items (aiojobs.shield around the whole
      transaction), backends stay near the pool size (client_connection_check_interval ends orphans).
   3. Scenario 2, BROKEN then FIXED: 200 event-stream subscribers. Broken serves 20 (its pool) and then fails
      every Redis call; fixed serves all 200 on one Redis connection.
   4. Scenario 3 (shield) runs its own app and SIGTERMs it mid-load: the load panel shows broken losing
      accepted transfers, fixed losing none.
   5. The gallery: click broken/fixed per pitfall (try blocking-call while a load runs).
   6. "Reset demo" between takes.{stop}
"""


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
        print(SCRIPT.format(base=base, monitor="", stop="\n  Stop it with: make down"))
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
        print(SCRIPT.format(base=base, monitor=monitor, stop="\n  Ctrl-C ends the demo."), flush=True)
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
