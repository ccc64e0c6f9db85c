"""Plumbing shared by the scenario modules."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from ..keys import probe_key, variant_key
from ..state import VariantState


def count_failure(app: web.Application) -> Callable[[], None]:
    """Counts a failure of the variant's protected work (``/metrics``: ``pitfalls_protected_errors``)."""
    return lambda: app[probe_key].hit(f"{app[variant_key]}.protected_errors")


def refused(v: VariantState, scenario: str) -> int:
    """The scenario's requests the variant answered with a 5xx."""
    return v["requests"].get(scenario, {}).get("5xx", 0)
