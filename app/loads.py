"""Loads started from the dashboard: ``python -m scripts.load`` as a child process, one at a time."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import tasks

LOAD_TIMEOUT = 180.0
REMOTE_SILENCE = 5.0  # a terminal load not heard from for this long is no longer shown as running


class LoadRunner:
    """One load at a time, as a child process with bounded output kept for the page."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.proc: asyncio.subprocess.Process | None = None
        self.task: asyncio.Task[None] | None = None
        self.scenario: str | None = None
        self.variant: str | None = None
        self.output: deque[str] = deque(maxlen=40)
        self.returncode: int | None = None
        self.remote_run: str | None = None  # a load started from a terminal, reporting itself (``report``)
        self.remote_seen = 0.0
        self.runs = 0  # which run ``status`` shows: the page tells its own load from an earlier one

    @property
    def running(self) -> bool:
        if self.task is not None and not self.task.done():
            return True
        live = time.monotonic() - self.remote_seen < REMOTE_SILENCE
        return self.remote_run is not None and self.returncode is None and live

    def report(self, run: str, scenario: str, variant: str, lines: list[str], code: int | None) -> bool:
        """What a load started elsewhere printed since its last report (``code``: it ended). Refused (False)
        while the page's own load runs; a new ``run`` replaces whatever was shown."""
        if self.task is not None and not self.task.done():
            return False
        if run != self.remote_run:
            self.remote_run, self.scenario, self.variant, self.returncode = run, scenario, variant, None
            self.output.clear()
            self.runs += 1
        self.output.extend(lines)
        self.remote_seen = time.monotonic()
        if code is not None:
            self.returncode = code
        return True

    def status(self) -> dict[str, Any]:
        verdict = next((line.split(": ", 1)[1] for line in self.output if line.startswith("VERDICT: ")), None)
        verdict = verdict if self.variant is not None else None  # a ladder prints one per step: none is its own
        return {
            "running": self.running,
            "run": self.runs,
            "scenario": self.scenario,
            "variant": self.variant,
            "returncode": self.returncode,
            "verdict": verdict,
            "output": list(self.output),
        }

    def start(self, scenario: str, variant: str, base_url: str, extra: Sequence[str]) -> None:
        argv = ["-m", "scripts.load", scenario, "--variant", variant, "--base-url", base_url, *extra]
        self.launch(scenario, variant, argv)

    def launch(self, label: str, variant: str | None, args: Sequence[str]) -> None:
        """Run ``python <args>`` as the current run, shown as ``label`` (and ``variant``)."""
        self.scenario, self.variant, self.returncode = label, variant, None
        self.remote_run = None
        self.output.clear()
        self.runs += 1
        argv = [sys.executable, *args]
        self.task = asyncio.create_task(self._run(argv), name="dashboard-load")

    async def _run(self, argv: list[str]) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=self.cwd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PITFALLS_LOAD_FROM_DASHBOARD": "1"},  # its output is ours to show already
        )
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout(LOAD_TIMEOUT):
                async for raw in self.proc.stdout:
                    for line in raw.decode(errors="replace").replace("\r", "\n").splitlines():
                        if line.strip():
                            self.output.append(line.rstrip())
                self.returncode = await self.proc.wait()
        finally:
            if self.proc.returncode is None:
                self.proc.kill()
                # Reaped even when cancelled again meanwhile (``tasks.stop`` asks twice if its own caller is
                # cancelled): a killed child exits at once.
                reaping = asyncio.ensure_future(self.proc.wait())
                try:
                    self.returncode = await asyncio.shield(reaping)
                except asyncio.CancelledError:
                    await asyncio.wait({reaping}, timeout=5)
                    raise

    async def close(self) -> None:
        """Stop the load (its child is killed on the way out); bounded, and the load's own failure is logged,
        never raised: a cleanup that raises would stop aiohttp from cleaning up the variants after it."""
        if self.task is not None:
            await tasks.stop(self.task)
