"""The registry is the one list: what a scenario's description declares is what the app serves, counts,
documents and explores — shown by adding the README's example scenario (examples/visits.py) to a real app."""

from __future__ import annotations

import asyncio
import re

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from app import resources
from app.factory import contexts, create_app
from app.scenario import Scenario
from app.scenarios import MAP_TARGETS, PLUMBING_TARGETS, SCENARIOS
from app.scenarios.cancellation import PITFALLS
from app.settings import VARIANTS, Settings
from app.talk import TALK
from examples import visits
from scripts.explore import LIFECYCLE, PLUMBING, TARGETS
from tests.helpers import ROOT, get_json, poll, variant_state


@pytest.fixture
async def with_visits(aiohttp_client: AiohttpClient, settings: Settings) -> TestClient:
    return await aiohttp_client(create_app(settings, [*SCENARIOS, visits.SCENARIO]))


async def count(client: TestClient, variant: str) -> int:
    return int((await get_json(client, f"/{variant}/visits"))["visits"])


@pytest.mark.parametrize("variant", VARIANTS)
async def test_an_added_scenario_is_served_and_its_failure_is_real(with_visits: TestClient, variant: str) -> None:
    """50 visits at once: broken loses updates, fixed counts all 50. Each handler reads before its first
    await, so once all 50 are in flight (the app's own count) every one has read; the hold keeps them there."""
    visiting = [asyncio.create_task(with_visits.post(f"/{variant}/visits?hold=1")) for _ in range(50)]
    in_flight = await poll(lambda: variant_state(with_visits, variant), lambda s: s["in_flight"] == 50, timeout=5)
    assert in_flight["in_flight"] == 50
    answers = await asyncio.gather(*visiting)
    assert [a.status for a in answers] == [200] * 50
    counted = await count(with_visits, variant)
    if variant == "broken":
        assert counted == 1  # all 50 read 0 before any wrote
    else:
        assert counted == 50


async def test_an_added_scenario_is_counted_and_documented(with_visits: TestClient) -> None:
    assert (await with_visits.post("/fixed/visits")).status == 200
    metrics = await (await with_visits.get("/metrics")).text()
    assert 'pitfalls_requests_total{outcome="2xx",scenario="visits",variant="fixed"} 1.0' in metrics
    spec = await get_json(with_visits, "/api/openapi.json")
    assert set(spec["paths"]["/{variant}/visits"]) == {"get", "post"}
    assert spec["paths"]["/{variant}/visits"]["post"]["parameters"][0]["schema"] == {"enum": list(VARIANTS)}


async def test_the_page_is_built_from_what_the_app_serves(
    aiohttp_client: AiohttpClient, settings: Settings, with_visits: TestClient
) -> None:
    """/api/scenarios: the talk's steps come with their code side by side (the lines that differ marked, the
    functions' own names not); an app serving only the example scenario
    still answers, its talk without the steps of scenarios it does not serve."""
    described = await get_json(with_visits, "/api/scenarios")
    assert [step["title"] for step in described["talk"]] == [step.title for step in TALK]
    orders = described["talk"][0]["code"]
    for variant in VARIANTS:
        lines = orders[variant]["lines"]
        assert lines[0]["text"].startswith(f"async def {variant}_create_order") and not lines[0]["changed"]
        assert any(line["changed"] for line in lines)
        assert orders[variant]["why"] and '"""' not in "".join(line["text"] for line in lines)
    alone = await aiohttp_client(create_app(settings, [visits.SCENARIO]))
    talk = (await get_json(alone, "/api/scenarios"))["talk"]
    assert [step["title"] for step in talk] == [step.title for step in TALK if step.scenario is None]


def test_the_map_targets_are_the_registrys() -> None:
    """scripts.explore has an invariant for every target a scenario declares, and nothing else."""
    assert set(TARGETS) | set(LIFECYCLE) | set(PITFALLS) == {t for s in SCENARIOS for t in s.targets}
    assert set(PLUMBING) == set(PLUMBING_TARGETS)
    assert len(MAP_TARGETS) == len(set(MAP_TARGETS))


def test_contexts_keep_each_scenarios_order_and_refuse_a_conflict() -> None:
    """Shield needs the scheduler to close before the pool (so listed after it); a scenario that asked for the
    opposite order would silently break that, so the factory refuses it."""
    merged = contexts(SCENARIOS, "fixed")
    assert merged.index(resources.postgres) < merged.index(resources.jobs)
    backwards = Scenario("backwards", "", __name__, (), contexts=lambda v: (resources.jobs, resources.postgres))
    with pytest.raises(ValueError, match="backwards"):
        contexts([*SCENARIOS, backwards], "fixed")


def test_every_scenario_is_one_hop_from_the_readme() -> None:
    """The README links each scenario's module and each gallery pitfall's module."""
    from app.scenarios.cancellation import PITFALLS

    readme = (ROOT / "README.md").read_text()
    for source in [s.source for s in SCENARIOS] + [p.source for p in PITFALLS.values()]:
        assert f"]({source})" in readme, source


def test_the_readme_shows_the_example_scenario_as_it_is() -> None:
    """ "Add your own pitfall" prints examples/visits.py itself, and says truly how long it is."""
    readme = (ROOT / "README.md").read_text()
    text = (ROOT / "examples" / "visits.py").read_text()
    assert text.strip() in readme
    lines = len(text.splitlines())
    assert re.search(rf"\b{lines} lines\b", readme), lines
