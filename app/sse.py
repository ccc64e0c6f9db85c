"""Server-Sent Events plumbing shared by every streaming handler, broken or fixed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web


@dataclass(frozen=True, slots=True)
class Event:
    """One thing to tell a subscriber: a ``message``, a ``gap`` (messages it will never see), a
    ``heartbeat`` (a comment that lets a dead client be noticed) or ``bye`` (the server is going away)."""

    kind: str
    data: str = ""


HEARTBEAT = Event("heartbeat")


@asynccontextmanager
async def stream(request: web.Request, live: dict[web.StreamResponse, str]) -> AsyncIterator[web.StreamResponse]:
    """An open event stream, kept in ``live`` (with its client's address) while it lasts. The ``: ready``
    comment tells the client its subscription is live, so what is published from now on reaches it."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    live[response] = request.remote or ""  # counted before the client hears it is ready
    try:
        await response.prepare(request)
        await response.write(b": ready\n\n")
        yield response
    finally:
        live.pop(response, None)


async def send(response: web.StreamResponse, event: Event) -> None:
    if event.kind == "heartbeat":
        await response.write(b": heartbeat\n\n")
        return
    lines = "".join(f"data: {line}\n" for line in event.data.split("\n"))
    prefix = "" if event.kind == "message" else f"event: {event.kind}\n"
    await response.write(f"{prefix}{lines}\n".encode())


def gap(**details: object) -> Event:
    return Event("gap", json.dumps(details))
