"""Input checks shared by every route: bad input is a 400 JSON error before anything is written."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .errors import BadRequest

CHANNEL_RE = re.compile(r"[A-Za-z0-9_.:-]{1,200}")


async def json_object(request: web.Request) -> dict[str, Any]:
    body = await request.json()  # malformed JSON / bad UTF-8 -> 400 in the error middleware
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body


def text(body: dict[str, Any], name: str, *, max_len: int = 200) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not 1 <= len(value) <= max_len or not _encodable(value):
        raise BadRequest(f"{name!r} must be a string of 1..{max_len} characters")
    return value


def _encodable(value: str) -> bool:
    """JSON can carry a lone surrogate (``"\\ud800"``) that no UTF-8 encoder takes: refuse it here, not with a
    500 when the database driver or a response tries to encode it."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


IDEMPOTENCY_KEY_RE = re.compile(r"[\x21-\x7e]{1,200}")


def idempotency_key(request: web.Request) -> str | None:
    """The ``Idempotency-Key`` header, if any: 1..200 visible ASCII characters."""
    key = request.headers.get("Idempotency-Key")
    if key is not None and not IDEMPOTENCY_KEY_RE.fullmatch(key):
        raise BadRequest("'Idempotency-Key' must be 1..200 visible ASCII characters")
    return key


def integer(body: dict[str, Any], name: str, *, lo: int, hi: int) -> int:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise BadRequest(f"{name!r} must be an integer in {lo}..{hi}")
    return value


def query_seconds(request: web.Request, name: str, *, default: float, hi: float) -> float:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"{name!r} must be a number of seconds in 0..{hi:g}") from None
    if not math.isfinite(value) or not 0 <= value <= hi:
        raise BadRequest(f"{name!r} must be a number of seconds in 0..{hi:g}")
    return value


@dataclass(frozen=True, slots=True)
class Item:
    sku: str
    qty: int


@dataclass(frozen=True, slots=True)
class Order:
    customer: str
    items: tuple[Item, ...]


async def order(request: web.Request) -> Order:
    body = await json_object(request)
    items = body.get("items")
    if not isinstance(items, list) or not 1 <= len(items) <= 100:
        raise BadRequest("'items' must be a list of 1..100 items")
    parsed = []
    for raw in items:
        if not isinstance(raw, dict):
            raise BadRequest("each item must be an object with 'sku' and 'qty'")
        parsed.append(Item(sku=text(raw, "sku"), qty=integer(raw, "qty", lo=1, hi=10_000)))
    return Order(customer=text(body, "customer"), items=tuple(parsed))
