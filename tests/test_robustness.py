"""Bad input, generated: whatever arrives, the fixed variant answers it without a 5xx, a rejected request
writes nothing, and every error is JSON. Also: the OpenAPI description covers every route."""

from __future__ import annotations

import json
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.keys import variants_key
from app.scenarios import SCENARIOS
from app.settings import VARIANTS
from tests.helpers import App

# Lone surrogates too: JSON carries "\ud800" fine, and a strict encoder fails on it later (once a 500).
SURROGATES = st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3)
TEXT = st.text(max_size=300) | SURROGATES | st.tuples(st.text(max_size=20), SURROGATES).map("".join)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)
FIELDS = ("customer", "items", "sku", "qty", "from", "to", "amount", "data")
LIKELY = st.dictionaries(st.sampled_from(FIELDS), JSON | st.lists(st.dictionaries(st.sampled_from(FIELDS), JSON)))
BODIES = st.one_of(
    JSON.map(lambda v: json.dumps(v).encode()), LIKELY.map(lambda v: json.dumps(v).encode()), st.binary()
)
ROUTES = ["/fixed/orders?hold=0", "/fixed/transfers?hold=0", "/fixed/events/fuzz"]


def call(base: str, method: str, path: str, body: bytes | None = None) -> tuple[int, Any, str]:
    request = urllib.request.Request(
        base + path, data=body, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type", "")


def written(base: str) -> tuple[int, int]:
    orders = json.loads(call(base, "GET", "/fixed/orders/stats")[1])["orders"]
    transfers = json.loads(call(base, "GET", "/fixed/transfers/stats")[1])["accepted"]
    return orders, transfers


@pytest.fixture
def served(spawn_app: Callable[..., App]) -> str:
    return spawn_app().base


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(ROUTES), body=BODIES)
def test_generated_bodies(served: str, route: str, body: bytes) -> None:
    before = written(served)
    status, payload, content_type = call(served, "POST", route, body)
    assert status < 500, (status, payload)
    if status >= 400:
        assert content_type.startswith("application/json")
        assert isinstance(json.loads(payload)["error"], str)
        assert written(served) == before  # a rejected request writes nothing


def _valid(value: str, hi: float) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and 0 <= number <= hi else None


def _harmless(value: str, hi: float) -> str:
    """A valid number as generated, unless it would make the request wait long: then scaled into 0..0.05 s
    (still valid, still not 0)."""
    number = _valid(value, hi)
    return value if number is None or number <= 0.05 else repr(number * 0.05 / hi)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    param=st.sampled_from([("/fixed/reports/slow", "seconds", 30), ("/fixed/export", "pace", 1)]),
    value=st.text(max_size=30) | st.floats().map(str) | st.integers().map(str),
)
def test_generated_query_numbers(served: str, param: tuple[str, str, float], value: str) -> None:
    path, name, hi = param
    sent = _harmless(value, hi)
    status, payload, _ = call(served, "GET", f"{path}?{urllib.parse.urlencode({name: sent})}")
    assert status == (400 if _valid(sent, hi) is None else 200), (sent, status, payload)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(channel=st.text(min_size=1, max_size=400))
def test_generated_channel_names(served: str, channel: str) -> None:
    status, payload, _ = call(
        served, "POST", "/fixed/events/" + urllib.parse.quote(channel, safe=""), b'{"data": "x"}'
    )
    assert status in (202, 400, 404), (status, payload)


def test_wrong_methods_and_unknown_routes(served: str) -> None:
    for method, path in [
        ("PUT", "/fixed/orders"),
        ("DELETE", "/api/state"),
        ("GET", "/fixed/nothing"),
        ("GET", "/x"),
    ]:
        status, payload, content_type = call(served, method, path)
        assert status in (404, 405) and content_type.startswith("application/json"), (method, path, payload)


async def test_openapi_describes_every_route(client: TestClient) -> None:
    spec = await (await client.get("/api/openapi.json")).json()
    assert spec["paths"]["/{variant}/orders"]["post"]["requestBody"]["required"]
    described = {(path, method.upper()) for path, ops in spec["paths"].items() for method in ops}
    apps = [client.app, *client.app[variants_key].values()]
    rungs = {"/broken" + rung.path for scenario in SCENARIOS for rung in scenario.rungs}  # broken's only
    served = {
        (
            path if path in rungs else re.sub(f"^/({'|'.join(VARIANTS)})/", "/{variant}/", path),
            route.method,
        )
        for app in apps
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
        for path in [route.resource.canonical]
    }
    dashboard_only = {"/", "/static", "/api/state/stream", "/api/load", "/api/load/report", "/api/explore"}
    served = {(path, method) for path, method in served if path not in dashboard_only}
    assert served == described, (served - described, described - served)
