"""A minimal Server-Sent Events client on aiohttp, for the load scripts and the tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass(frozen=True, slots=True)
class SseEvent:
    kind: str  # "message", "gap", "bye", "comment" (heartbeat, ready); "eof" (ended) or "cut" (broken off)
    data: str = ""


class SseStream:
    """Events read off one open event-stream response."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next(self) -> SseEvent:
        kind, data, comment = "message", list[str](), None
        while True:
            try:
                raw = await self.response.content.readline()
            except aiohttp.ClientPayloadError:
                self.close()
                return SseEvent("cut")  # the server dropped the connection mid-stream
            if not raw:
                self.close()
                return SseEvent("eof")
            line = raw.decode().rstrip("\r\n")
            if line == "":
                if data or kind != "message":
                    return SseEvent(kind, "\n".join(data))
                if comment is not None:
                    return SseEvent("comment", comment)
                continue
            if line.startswith(":"):
                comment = line[1:].strip()
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                kind = value
            elif field == "data":
                data.append(value)

    async def messages(self, n: int) -> list[SseEvent]:
        """The next ``n`` non-comment events (messages, gaps, bye; eof ends early)."""
        out: list[SseEvent] = []
        while len(out) < n:
            event = await self.next()
            if event.kind != "comment":
                out.append(event)
            if event.kind in ("eof", "cut"):
                break
        return out

    def close(self) -> None:
        """Hang up: the connection is closed, not returned to a pool."""
        self.response.close()


async def subscribe(session: aiohttp.ClientSession, url: str) -> tuple[int, SseStream | Any]:
    """Open a stream and wait for its ``: ready``; on an error status, return the status and the JSON body."""
    response = await session.get(url)
    if response.status != 200:
        try:
            body = await response.json(content_type=None)
        finally:
            response.release()
        return response.status, body
    stream = SseStream(response)
    first = await stream.next()
    if first != SseEvent("comment", "ready"):
        stream.close()
        raise RuntimeError(f"stream did not start with ': ready': {first}")
    return 200, stream
