"""Server-Sent Events plumbing shared by every streaming handler, broken or fixed: the stream, its sends (each
with a deadline), and ending every stream at shutdown."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field

from aiohttp import web

log = logging.getLogger("app.sse")

BYE_GRACE = 1.0  # at shutdown: how long streams get to send their ``bye`` and end before they are cut


@dataclass(frozen=True, slots=True)
class Event:
    """One thing to tell a subscriber: a ``message``, a ``gap`` (messages it will never see), a
    ``heartbeat`` (a comment that lets a dead client be noticed) or ``bye`` (the server is going away).
    Encoded once, when made: the hub hands the same event to every subscriber of its channel."""

    kind: str
    data: str = ""
    wire: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind == "heartbeat":
            wire = b": heartbeat\n\n"
        else:
            lines = "".join(f"data: {line}\n" for line in self.data.split("\n"))
            prefix = "" if self.kind == "message" else f"event: {self.kind}\n"
            wire = f"{prefix}{lines}\n".encode()
        object.__setattr__(self, "wire", wire)


HEARTBEAT = Event("heartbeat")


class Stalled(Exception):
    """The client did not take a send within its deadline: it stopped reading."""


class Live:
    """Requests in progress that may run long (event streams, reports, exports) with their client's address:
    counted for the bounds and ``/api/state``, and cut at shutdown."""

    def __init__(self) -> None:
        self._requests: dict[int, tuple[web.Request, str]] = {}  # by id(): a Request is not hashable
        self._per_address: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"<Live {len(self)}>"

    def __len__(self) -> int:
        return len(self._requests)

    def addresses(self) -> list[str]:
        return [address for _, address in self._requests.values()]

    def from_address(self, address: str) -> int:
        """How many of them came from ``address`` (counted as they come and go: no walk over all of them)."""
        return self._per_address[address]

    def requests(self) -> list[web.Request]:
        return [request for request, _ in self._requests.values()]

    @contextmanager
    def registered(self, request: web.Request, address: str) -> Iterator[None]:
        """``request`` (from ``address``) counts while the block runs."""
        self._requests[id(request)] = (request, address)
        self._per_address[address] += 1
        try:
            yield
        finally:
            self._requests.pop(id(request), None)
            self._per_address[address] -= 1
            if not self._per_address[address]:
                del self._per_address[address]


class Stream:
    """An open event stream: its ``response`` (what the handler returns) and ``send``."""

    def __init__(self, response: web.StreamResponse, transport: asyncio.Transport | None, timeout: float):
        self.response = response
        self._transport = transport
        self._timeout = timeout
        # the transport's high-water mark (nothing in aiohttp changes it), read once rather than per send
        self._high = transport.get_write_buffer_limits()[1] if transport is not None else 0

    async def send(self, *events: Event) -> None:
        """Write the events, in one write; ``Stalled`` if the client has not taken them within the send
        timeout. A write that cannot wait (nothing is queued for this client, and it fits under the transport's
        high-water mark) goes without a timer: a timer per message per subscriber was a tenth of the fan-out's
        CPU."""
        data = events[0].wire if len(events) == 1 else b"".join(event.wire for event in events)
        transport = self._transport
        if transport is not None and transport.get_write_buffer_size() == 0 and len(data) <= self._high:
            await self.response.write(data)
            return
        await _write(self.response, data, self._timeout)


@asynccontextmanager
async def stream(request: web.Request, *, send_timeout: float) -> AsyncIterator[Stream]:
    """An open event stream. The ``: ready`` comment tells the client its subscription is live, so what is
    published from now on reaches it. A client that stops reading (``Stalled``) has its connection cut and the
    stream ends quietly: its handler must not sit in a write."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    try:
        await response.prepare(request)
        await _write(response, b": ready\n\n", send_timeout)
        transport = request.transport if isinstance(request.transport, asyncio.Transport) else None
        yield Stream(response, transport, send_timeout)
    except Stalled:
        log.info("%s: client stopped reading for %.0f s; stream cut", request.path, send_timeout)
        if request.transport is not None:
            request.transport.abort()


async def _write(response: web.StreamResponse, data: bytes, timeout: float) -> None:
    try:
        async with asyncio.timeout(timeout):
            await response.write(data)  # waits while the transport's buffer is full: a client not reading
    except TimeoutError:
        raise Stalled from None


def gap(**details: object) -> Event:
    return Event("gap", json.dumps(details))


async def end_all(lives: Iterable[Live], *, grace: float = BYE_GRACE) -> int:
    """At shutdown, after every subscriber was told ``bye``: give the streams ``grace`` seconds to end by
    themselves, then cut the connections of those that did not (a client that stopped reading never takes its
    ``bye``; a broken stream never hears it). Cutting is a hang-up: aiohttp cancels the handler. ``abort``,
    not ``close``: ``close`` would wait for the unread buffer to drain. Returns how many were cut."""
    lives = list(lives)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while any(lives) and loop.time() < deadline:  # noqa: ASYNC110 (a bounded poll, once, at shutdown)
        await asyncio.sleep(0.02)
    cut = 0
    for live in lives:
        for request in live.requests():
            if request.transport is not None:
                request.transport.abort()
                cut += 1
    if cut:
        log.info("shutdown: cut %d streams and long reads that had not ended", cut)
    return cut
