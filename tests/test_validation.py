"""Bad input answers a 4xx JSON error and writes nothing, on both variants."""

from __future__ import annotations

import io

import pytest
from aiohttp.test_utils import TestClient

from app.settings import VARIANTS
from tests.helpers import get_json

GOOD = {"customer": "ann", "items": [{"sku": "tea", "qty": 1}]}

BAD_BODIES = {
    "malformed JSON": b'{"customer": "ann", "items": [',
    "invalid UTF-8": b'{"customer": "\xff\xfe", "items": []}',
    "not an object": b"[1, 2, 3]",
    "customer missing": b'{"items": [{"sku": "a", "qty": 1}]}',
    "customer empty": b'{"customer": "", "items": [{"sku": "a", "qty": 1}]}',
    "customer too long": ('{"customer": "' + "x" * 201 + '", "items": [{"sku": "a", "qty": 1}]}').encode(),
    "customer not a string": b'{"customer": 7, "items": [{"sku": "a", "qty": 1}]}',
    "items empty": b'{"customer": "ann", "items": []}',
    "items not a list": b'{"customer": "ann", "items": {"sku": "a"}}',
    "too many items": (
        '{"customer": "ann", "items": [' + ",".join(['{"sku": "a", "qty": 1}'] * 101) + "]}"
    ).encode(),
    "item not an object": b'{"customer": "ann", "items": ["tea"]}',
    "qty zero": b'{"customer": "ann", "items": [{"sku": "a", "qty": 0}]}',
    "qty too large": b'{"customer": "ann", "items": [{"sku": "a", "qty": 10001}]}',
    "qty a string": b'{"customer": "ann", "items": [{"sku": "a", "qty": "1"}]}',
    "qty a float": b'{"customer": "ann", "items": [{"sku": "a", "qty": 1.5}]}',
    "qty a boolean": b'{"customer": "ann", "items": [{"sku": "a", "qty": true}]}',
    "sku missing": b'{"customer": "ann", "items": [{"qty": 1}]}',
    "good item, then bad": b'{"customer": "ann", "items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": -1}]}',
}


async def _nothing_written(client: TestClient) -> None:
    for variant in VARIANTS:
        assert (await get_json(client, f"/{variant}/orders/stats"))["orders"] == 0


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", list(BAD_BODIES))
async def test_bad_order_body(client: TestClient, variant: str, case: str) -> None:
    resp = await client.post(
        f"/{variant}/orders", data=BAD_BODIES[case], headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400
    assert resp.content_type == "application/json"
    assert isinstance((await resp.json())["error"], str)
    await _nothing_written(client)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("hold", ["-1", "5.01", "abc", "nan", "inf", ""])
async def test_hold_out_of_range(client: TestClient, variant: str, hold: str) -> None:
    resp = await client.post(f"/{variant}/orders?hold={hold}", json=GOOD)
    assert resp.status == 400
    assert "hold" in (await resp.json())["error"]
    await _nothing_written(client)


@pytest.mark.parametrize("seconds", ["-0.1", "30.5", "x"])
async def test_report_seconds_out_of_range(client: TestClient, seconds: str) -> None:
    resp = await client.get(f"/fixed/reports/slow?seconds={seconds}")
    assert resp.status == 400
    assert "seconds" in (await resp.json())["error"]


async def test_unknown_variant_and_route(client: TestClient) -> None:
    for method, path in [("POST", "/sideways/orders"), ("GET", "/sideways/orders/stats"), ("GET", "/nope")]:
        resp = await client.request(method, path, json=GOOD)
        assert resp.status == 404
        assert (await resp.json()) == {"error": "Not Found"}
    await _nothing_written(client)


async def test_wrong_method(client: TestClient) -> None:
    resp = await client.delete("/fixed/orders")
    assert resp.status == 405
    assert "error" in await resp.json()
    assert "POST" in resp.headers["Allow"]


async def test_body_over_limit(client: TestClient) -> None:
    body = b'{"customer": "' + b"x" * (1024**2) + b'", "items": []}'
    resp = await client.post("/fixed/orders", data=io.BytesIO(body), headers={"Content-Type": "application/json"})
    assert resp.status == 413
    assert (await resp.json())["error"] == "body over the 1 MiB limit"
    await _nothing_written(client)
