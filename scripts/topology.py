"""The compose topology without Docker: the two app processes of ``docker-compose.yml``, started with its
environment and the Dockerfile's command, behind Debian's caddy running ``deploy/Caddyfile`` — the compose
file's proxy — against the local Postgres and Redis. Everything below goes through the proxy.

    python -m scripts.topology [--proxy compose|bare] [--set NAME=VALUE] [--no-loads] [--json PATH]
                                                                           (make topology)

What is checked, each with a verdict line:
  healthz    /healthz through the proxy, and requests reach both app processes;
  loads      every load verdict as without the proxy (``scripts.load``); disconnect/broken must still reproduce:
             hang-ups at the proxy must cancel the handlers behind it (counted on each app, not the proxy);
  fan-out    a message published through one app process reaches subscribers on the other (the hub);
  sigterm    app1 gets SIGTERM mid-traffic: every request through the proxy must still succeed.
``--proxy bare`` runs the same steps behind the bare ``caddy reverse-proxy --to … --to …`` (the Caddyfile without
its health checks and retries), to show what those lines are for. Only what the compose file says is used,
translated to this machine: service hosts become 127.0.0.1 and free ports, the proxy's network becomes
loopback (``TRUSTED_PROXIES``), Postgres and Redis are this environment's ``DATABASE_URL`` / ``REDIS_URL``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from app.settings import Settings

from ._common import fetch_json, variant_state
from ._sse import SseStream, subscribe
from .toolkit import ROOT, AppProcess, free_port, poll, wait_healthy

COMPOSE = ROOT / "docker-compose.yml"
CADDYFILE = ROOT / "deploy" / "Caddyfile"
APPS = ("app1", "app2")
# scenario, variant: the load verdicts checked through the proxy (shield's own run restarts its app: the
# sigterm step is its counterpart here)
LOADS = (("disconnect", "broken"), ("disconnect", "fixed"), ("pubsub", "broken"), ("pubsub", "fixed"))
SUBSCRIBERS = 20
SIGTERM_REQUESTS = 300


def compose_service(name: str) -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services[name]


def app_env(settings: Settings, changes: dict[str, str]) -> dict[str, str]:
    """The app services' environment from the compose file, translated to this machine (module docstring),
    with ``changes`` (``--set``) on top."""
    env = {k: interpolate(str(v)) for k, v in compose_service("app1")["environment"].items()}
    env.update(DATABASE_URL=settings.database_url, REDIS_URL=settings.redis_url, TRUSTED_PROXIES="127.0.0.1/32")
    return {**env, **changes}


def interpolate(value: str) -> str:
    """Compose's ``${NAME}`` / ``${NAME:-default}`` from this environment."""
    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: os.environ.get(m[1]) or m[2] or "", value)


def dockerfile_command() -> list[str]:
    """The Dockerfile's CMD, the command of both app services (they set none of their own)."""
    line = next(x for x in (ROOT / "Dockerfile").read_text().splitlines() if x.startswith("CMD "))
    command: list[str] = json.loads(line.removeprefix("CMD "))
    return command


def caddy_config(upstreams: list[str], port: int, *, bare: bool, env: dict[str, str]) -> dict[str, Any]:
    """deploy/Caddyfile adapted to JSON with this machine's addresses; ``bare`` drops the health checks and
    retries, which leaves what ``caddy reverse-proxy --from :8080 --to app1:8080 --to app2:8080`` runs."""
    adapt = subprocess.run(
        ["caddy", "adapt", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
        env={**env, "UPSTREAMS": " ".join(upstreams), "PROXY_BIND": "127.0.0.1", "PROXY_PORT": str(port)},
        capture_output=True,
        text=True,
        check=True,
    )
    config: dict[str, Any] = json.loads(adapt.stdout)
    if bare:
        for server in config["apps"]["http"]["servers"].values():
            for route in server["routes"]:
                for handler in route["handle"]:
                    handler.pop("health_checks", None)
                    handler.pop("load_balancing", None)
    return config


@dataclass
class Topology:
    """Two apps and the proxy, as processes; ``base`` is the proxy."""

    apps: dict[str, AppProcess]
    proxy: subprocess.Popen[bytes]
    base: str
    logs: Path
    findings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def start(cls, settings: Settings, *, bare: bool = False, changes: dict[str, str] | None = None) -> Topology:
        if shutil.which("caddy") is None:
            raise SystemExit(
                "caddy is not installed: apt-get install caddy (Debian's caddy 2.6, the compose proxy)"
            )
        command = dockerfile_command()
        if command[:3] != ["python", "-m", "app"] or set(command[3::2]) != {"--host", "--port"}:
            raise SystemExit(f"the Dockerfile's CMD changed ({command}): teach scripts.topology to run it")
        logs = Path(tempfile.mkdtemp(prefix="pitfalls-topology-"))
        env = app_env(settings, changes or {})
        # compose's `migrate` service, then app1 and app2 (`python -m app`, host 127.0.0.1, a free port each)
        AppProcess(None, env).migrate()
        apps: dict[str, AppProcess] = {}
        proxy = None
        try:
            for name in APPS:
                apps[name] = AppProcess(logs / f"{name}.log", env).start()
            port = free_port()
            config = logs / "caddy.json"
            home = {"HOME": str(logs), "XDG_DATA_HOME": str(logs), "XDG_CONFIG_HOME": str(logs)}
            upstreams = [f"127.0.0.1:{apps[name].port}" for name in APPS]
            config.write_text(json.dumps(caddy_config(upstreams, port, bare=bare, env={**os.environ, **home})))
            with (logs / "caddy.log").open("a") as out:
                proxy = subprocess.Popen(
                    ["caddy", "run", "--config", str(config)], env={**os.environ, **home}, stdout=out, stderr=out
                )
            base = f"http://127.0.0.1:{port}"
            wait_healthy(base, 30, proxy)
        except BaseException:
            for app in apps.values():
                app.kill()
            if proxy is not None:
                proxy.kill()
            raise
        return cls(apps, proxy, base, logs)

    def stop(self) -> None:
        for app in self.apps.values():
            app.stop(timeout=60)
        self.proxy.terminate()
        try:
            self.proxy.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proxy.kill()

    def __enter__(self) -> Topology:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


async def check_healthz(top: Topology) -> dict[str, Any]:
    """/healthz through the proxy, and which app processes answered 20 requests (by pid)."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{top.base}/healthz") as resp:
            status = resp.status
        pids = Counter([(await fetch_json(http, f"{top.base}/api/state"))["pid"] for _ in range(20)])
    names = {app.pid: name for name, app in top.apps.items()}
    seen = {names.get(pid, f"pid {pid}"): n for pid, n in pids.items()}
    ok = status == 200 and set(seen) == set(APPS)
    return {"ok": ok, "status": status, "answered_by": seen}


async def cancelled(top: Topology, variant: str) -> int:
    """Handlers cancelled by client hang-ups so far, summed over both apps, each asked directly."""
    async with aiohttp.ClientSession() as http:
        return sum(
            [(await variant_state(http, app.base, variant))["handlers_cancelled"] for app in top.apps.values()]
        )


async def check_load(top: Topology, scenario: str, variant: str) -> dict[str, Any]:
    """``scripts.load`` through the proxy; for disconnect, the handlers it cancelled on the apps behind it."""
    before = await cancelled(top, variant)
    report = top.logs / f"load-{scenario}-{variant}.json"
    argv = [sys.executable, "-m", "scripts.load", scenario, "--variant", variant, "--base-url", top.base]
    run = await asyncio.to_thread(
        subprocess.run,
        [*argv, "--seed", "7", "--reset", "--json", str(report)],
        cwd=ROOT,
        env={**os.environ, "PITFALLS_LOAD_FROM_DASHBOARD": "1"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    (top.logs / f"load-{scenario}-{variant}.out").write_text(run.stdout + run.stderr)
    verdict = (
        json.loads(report.read_text())["verdict"] if report.exists() else f"no report (exit {run.returncode})"
    )
    result: dict[str, Any] = {"ok": run.returncode == 0, "verdict": verdict}
    if scenario == "disconnect":
        result["handlers_cancelled_behind_proxy"] = await cancelled(top, variant) - before
        result["ok"] &= result["handlers_cancelled_behind_proxy"] > 0
    return result


async def check_fanout(top: Topology) -> dict[str, Any]:
    """Subscribers opened through the proxy land on both apps; one message published on each app directly
    reaches every one of them (each app's hub subscribes in Redis)."""
    channel = f"topology-{os.getpid()}"
    streams: list[SseStream] = []
    async with aiohttp.ClientSession() as http:
        try:
            for _ in range(SUBSCRIBERS):
                status, stream = await subscribe(http, f"{top.base}/fixed/events/{channel}")
                if status != 200:
                    return {"ok": False, "subscribe_status": status, "body": stream}
                streams.append(stream)

            async def live() -> list[int]:
                return [(await variant_state(http, app.base, "fixed"))["subscribers"] for app in top.apps.values()]

            per_app = await poll(live, lambda n: sum(n) >= SUBSCRIBERS)
            for name, app in top.apps.items():
                async with http.post(f"{app.base}/fixed/events/{channel}", json={"data": f"from {name}"}) as r:
                    r.raise_for_status()
            async with asyncio.timeout(10):
                got = await asyncio.gather(*(s.messages(2) for s in streams))
        finally:
            for s in streams:
                s.close()
    both = sum(sorted(e.data for e in events) == [f"from {n}" for n in APPS] for events in got)
    return {
        "ok": both == SUBSCRIBERS and all(per_app),
        "subscribers_per_app": dict(zip(APPS, per_app, strict=True)),
        "received_from_both": both,
    }


async def check_sigterm(top: Topology) -> dict[str, Any]:
    """Orders and reads through the proxy, 10 at a time, without pause: app1 gets SIGTERM after the first
    100, traffic goes on while it drains and stops, then 100 more with app1 gone. Every request must succeed:
    the proxy stops sending to an app that stops (bounded: 60 s)."""
    outcomes: Counter[str] = Counter()
    done, after = 0, 0
    exited, begun = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal done, after
        while after < SIGTERM_REQUESTS // 3 and loop.time() < deadline:
            i, later = done, exited.is_set()
            if i % 2:
                call = http.get(f"{top.base}/fixed/orders/stats")
            else:
                body = {"customer": f"topology-{i}", "items": [{"sku": "sku-1", "qty": 1}]}
                call = http.post(f"{top.base}/fixed/orders?hold=0.05", json=body)
            try:
                async with call as resp:
                    await resp.read()
                    outcomes[str(resp.status)] += 1
            except aiohttp.ClientError as exc:
                outcomes[type(exc).__name__] += 1
            done += 1
            after += later
            if done >= SIGTERM_REQUESTS // 3:
                begun.set()

    async def stopper() -> None:
        await begun.wait()
        took = await asyncio.to_thread(top.apps["app1"].stop, signal.SIGTERM, 60)
        top.findings["app1_stop_seconds"] = round(took, 2)
        exited.set()

    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        await asyncio.gather(stopper(), *(worker(http) for _ in range(10)))
    failed = sum(n for status, n in outcomes.items() if not status.startswith("2"))
    return {
        "ok": failed == 0 and exited.is_set(),
        "requests": done,
        "outcomes": dict(outcomes),
        "failed": failed,
        "seconds": round(time.monotonic() - started, 2),
        "app1_stop_seconds": top.findings.get("app1_stop_seconds"),
    }


async def run_checks(top: Topology, *, loads: bool = True) -> dict[str, dict[str, Any]]:
    checks: dict[str, dict[str, Any]] = {"healthz": await check_healthz(top)}
    show(checks, "healthz")
    if loads:
        for scenario, variant in LOADS:
            key = f"load {scenario}/{variant}"
            checks[key] = await check_load(top, scenario, variant)
            show(checks, key)
    checks["fan-out"] = await check_fanout(top)
    show(checks, "fan-out")
    checks["sigterm"] = await check_sigterm(top)  # last: app1 is gone afterwards
    show(checks, "sigterm")
    return checks


def show(checks: dict[str, dict[str, Any]], key: str) -> None:
    result = checks[key]
    detail = ", ".join(f"{k} {v}" for k, v in result.items() if k != "ok")
    print(f"  {'ok  ' if result['ok'] else 'FAIL'} {key:<22} {detail}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.topology", description=__doc__.split("\n")[0])
    p.add_argument("--proxy", choices=["compose", "bare"], default="compose", help="deploy/Caddyfile, or bare")
    p.add_argument("--no-loads", action="store_true", help="skip the load verdicts (the quick checks only)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="change the apps' environment")
    p.add_argument("--json", type=Path, help="write the results as JSON here")
    args = p.parse_args(argv)
    changes = dict(item.split("=", 1) for item in args.set)
    settings = Settings.from_env()
    print(
        f"topology: app1, app2 behind caddy ({args.proxy} proxy)" + "".join(f", {c}" for c in args.set), flush=True
    )
    with Topology.start(settings, bare=args.proxy == "bare", changes=changes) as top:
        print(f"  proxy {top.base} -> " + ", ".join(f"{n} {a.base}" for n, a in top.apps.items()), flush=True)
        print(f"  logs in {top.logs}", flush=True)
        checks = asyncio.run(run_checks(top, loads=not args.no_loads))
    ok = all(c["ok"] for c in checks.values())
    if args.json is not None:
        args.json.write_text(json.dumps({"proxy": args.proxy, "checks": checks}, indent=2) + "\n")
    print(f"TOPOLOGY: {'held' if ok else 'failed'} ({sum(c['ok'] for c in checks.values())}/{len(checks)} checks)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
