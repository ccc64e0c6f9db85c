"""Scenario ``disconnect``: the same hang-ups against both variants, the failure asserted for broken and its
absence for fixed.

The hang-up lands at a known point: the app's probe counts handlers entering their ``hold`` (the slow step
with the order half written), the test waits for all of them to be there, then closes their sockets. aiohttp's
test server runs with ``handler_cancellation=True``, so each close cancels its handler right in the hold.
"""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestClient

from app.keys import probe_key
from app.settings import VARIANTS
from app.state import VariantState
from scripts.toolkit import quiet
from tests.helpers import Callers, get_json, poll, variant_state

N = 8
ITEMS = [{"sku": "tea", "qty": 2}, {"sku": "cup", "qty": 1}, {"sku": "pot", "qty": 1}]
HOLD = 5  # long enough that no handler leaves its hold before the hang-up; fixed ones then finish it


async def wait_quiet(client: TestClient, variant: str) -> VariantState:
    """Wait until no handler or aiojobs job of the variant holds a pool connection."""
    return await poll(lambda: variant_state(client, variant), quiet, timeout=HOLD + 10)


@pytest.mark.parametrize(
    ("variant", "path", "without_items", "orders"),
    [
        ("broken", "/orders", N, N),
        # the ladder's middle step (a transaction, no shield): never half an order, but every one rolled back
        ("broken", "/orders/no-shield", 0, 0),
        ("fixed", "/orders", 0, N),
    ],
)
async def test_hang_up_during_hold(
    client: TestClient, variant: str, path: str, without_items: int, orders: int
) -> None:
    probe = client.app[probe_key]
    async with Callers(client) as callers:
        for i in range(N):
            callers.start("POST", f"/{variant}{path}?hold={HOLD}", json={"customer": f"c{i}", "items": ITEMS})
        await probe.reached(f"{variant}.hold", N)
        await callers.hang_up()
    await probe.reached(f"{variant}.cancelled", N)
    state = await wait_quiet(client, variant)
    assert state["jobs"]["active"] == 0

    stats = await get_json(client, f"/{variant}/orders/stats")
    # broken: every order stays without its items; no shield: none stays at all; fixed: every one lands whole.
    assert stats == {
        "orders": orders,
        "items": (orders - without_items) * len(ITEMS),
        "orders_without_items": without_items,
    }
    assert state["handlers_cancelled"] == N


async def test_fixed_order_without_hang_up_is_whole(client: TestClient) -> None:
    for variant in VARIANTS:
        resp = await client.post(f"/{variant}/orders?hold=0", json={"customer": "ann", "items": ITEMS})
        assert resp.status == 201
        assert isinstance((await resp.json())["order_id"], int)
        assert await get_json(client, f"/{variant}/orders/stats") == {
            "orders": 1,
            "items": len(ITEMS),
            "orders_without_items": 0,
        }


REPORTS = 4
REPORT_SECONDS = 30


@pytest.mark.parametrize(("variant", "left_running"), [("broken", REPORTS), ("fixed", 0)])
async def test_abandoned_report_backends(client: TestClient, variant: str, left_running: int) -> None:
    """broken: the server backends keep running the report after their clients are gone; fixed: they stop."""
    probe = client.app[probe_key]
    async with Callers(client) as callers:
        for _ in range(REPORTS):
            callers.start("GET", f"/{variant}/reports/slow?seconds={REPORT_SECONDS}")
        running = await poll(
            lambda: variant_state(client, variant), lambda s: s["postgres"]["backends_active"] == REPORTS
        )
        assert running["postgres"]["backends_active"] == REPORTS
        await callers.hang_up()
    await probe.reached(f"{variant}.cancelled", REPORTS)

    # Give the server up to 3 s to end them (fixed needs ~0.1 s); broken's run for the whole 30 s.
    state = await poll(
        lambda: variant_state(client, variant), lambda s: s["postgres"]["backends_active"] == 0, timeout=3
    )
    assert state["postgres"]["backends_active"] == left_running
    # Either way aiopg closed the cancelled connections: nothing is stuck in the pool itself.
    assert state["postgres"]["pool_in_use"] == 0


async def test_a_fixed_report_stops_its_query_before_its_handler_ends(client: TestClient) -> None:
    """The server-side cancel: by the time the cancelled handler is done, its query no longer runs. Before,
    the backend noticed the closed socket only at its next 100 ms check, so for a while after every hang-up
    the abandoned query still held a backend — at a high enough abandon rate, the role's limit."""
    probe = client.app[probe_key]
    async with Callers(client) as callers:
        callers.start("GET", f"/fixed/reports/slow?seconds={REPORT_SECONDS}")
        await probe.reached("fixed.report", 1)
    await probe.reached("fixed.cancelled", 1)
    assert (await variant_state(client, "fixed"))["postgres"]["backends_active"] == 0


@pytest.mark.parametrize(("variant", "status"), [("broken", 503), ("fixed", 201)])
async def test_abandoned_reports_exhaust_the_role(client: TestClient, variant: str, status: int) -> None:
    """Hang up on more slow reports than the role may have connections, as fast as they go: broken's
    orphaned backends use up its CONNECTION LIMIT and Postgres refuses it; fixed keeps serving. The other
    variant is never affected."""
    probe = client.app[probe_key]
    limit = (await variant_state(client, variant))["postgres"]["role_connection_limit"]
    assert limit is not None
    async with Callers(client) as callers:
        for i in range(limit + 2):
            task = callers.start("GET", f"/{variant}/reports/slow?seconds={REPORT_SECONDS}")
            # Hang up once the handler has sent its query, or stop when it was answered (refused) instead.
            sent = asyncio.ensure_future(probe.reached(f"{variant}.report", i + 1))
            await asyncio.wait([sent, task], return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                sent.cancel()
                break
            await callers.hang_up()
            await probe.reached(f"{variant}.cancelled", i + 1)
            # Unpaced: the next report goes out at once. Fixed stops each abandoned query on the server and
            # holds its admission place until the backend is gone, so its backends stay bounded at any rate
            # (it answers 503 while its places are taken, which ends the storm for it here).

    resp = await client.post(f"/{variant}/orders?hold=0", json={"customer": "late", "items": ITEMS})
    assert resp.status == status, await resp.text()
    if status == 503:
        body = await resp.json()
        assert body["error"] == "database refused the connection"
        assert "too many connections for role" in body["detail"]
        assert (await variant_state(client, variant))["postgres"]["role_connections"] == limit
    # The health check and the fixed variant stand, whatever happened to broken.
    assert (await client.get("/healthz")).status == 200
    resp = await client.post("/fixed/orders?hold=0", json={"customer": "ok", "items": ITEMS})
    assert resp.status == 201
