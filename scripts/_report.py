"""A load started from a terminal shows on the dashboard too: what it prints goes to the app it loads
(``POST /api/load/report``, loopback only), twice a second, and its end with the exit code. If nothing answers
there, the load runs all the same and says nothing about it."""

from __future__ import annotations

import asyncio
import io
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TextIO

import aiohttp

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
FROM_DASHBOARD = "PITFALLS_LOAD_FROM_DASHBOARD"  # set by the dashboard's own runner: it shows the output already


class Tee(io.TextIOBase):
    """Writes through to ``stream`` and keeps a copy of what was written."""

    def __init__(self, stream: TextIO, copy: list[str]) -> None:
        self.stream = stream
        self.copy = copy

    def write(self, text: str) -> int:
        self.copy.append(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()


@asynccontextmanager
async def reported(base_url: str, scenario: str, variant: str) -> AsyncIterator[list[int]]:
    """Yield a one-item list for the exit code; everything printed meanwhile also reaches the app's page."""
    code = [1]
    if os.environ.get(FROM_DASHBOARD):
        yield code
        return
    copy: list[str] = []
    run = str(uuid.uuid4())
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = Tee(out, copy), Tee(err, copy)
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2))
    url = f"{base_url.rstrip('/')}/api/load/report"

    async def send(done: bool) -> None:
        text, copy[:] = ANSI.sub("", "".join(copy)), []  # a terminal's progress line redraws itself
        lines = [line.rstrip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
        body = {"run": run, "scenario": scenario, "variant": variant, "lines": lines[-200:], "done": done}
        if done:
            body["code"] = code[0]
        try:
            async with http.post(url, json=body) as resp:
                await resp.read()
        except (aiohttp.ClientError, TimeoutError):
            pass  # no dashboard there: the terminal is enough

    async def every_half_second() -> None:
        while True:
            await send(done=False)
            await asyncio.sleep(0.5)

    sender = asyncio.create_task(every_half_second(), name="load-report")
    try:
        yield code
    finally:
        sys.stdout, sys.stderr = out, err
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        await send(done=True)
        await http.close()
