"""``GET /api/openapi.json``: an OpenAPI 3.1 description of every public route (CONTRACT.md), so tools such as
schemathesis can generate input against the running app. The operator routes are listed here; each scenario's
routes come from its own description (``Route.spec``), built with the helpers below."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .scenario import Scenario
from .settings import VARIANTS
from .validation import CHANNEL_RE

ERROR = {
    "description": "bad input",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
TEXT = {"type": "string", "minLength": 1, "maxLength": 200}
CHANNEL = {
    "name": "channel",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": f"^{CHANNEL_RE.pattern}$"},
}


def seconds(name: str, hi: float, default: float) -> dict[str, Any]:
    schema = {"type": "number", "minimum": 0, "maximum": hi, "default": default}
    return {"name": name, "in": "query", "required": False, "schema": schema}


def json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def ok(description: str, code: str = "200") -> dict[str, Any]:
    return {code: {"description": description}, "400": ERROR, "404": ERROR, "413": ERROR, "503": ERROR}


def operation(description: str, code: str = "200", *, params: Iterable[dict[str, Any]] = (), **more: Any) -> Any:
    """One operation of a variant route: the ``{variant}`` parameter, ``params``, the usual error answers."""
    return {"parameters": [VARIANT, *params], "responses": ok(description, code), **more}


VARIANT = {"name": "variant", "in": "path", "required": True, "schema": {"enum": list(VARIANTS)}}

OPERATOR: dict[str, Any] = {
    "/healthz": {"get": {"responses": {"200": {"description": "healthy"}, "503": {"description": "not"}}}},
    "/ping": {"get": {"responses": {"200": {"description": "pong"}}}},
    "/api/openapi.json": {"get": {"responses": {"200": {"description": "this document"}}}},
    "/metrics": {"get": {"responses": {"200": {"description": "Prometheus text format"}}}},
    "/api/state": {"get": {"responses": {"200": {"description": "a snapshot per variant"}}}},
    "/api/scenarios": {"get": {"responses": {"200": {"description": "the scenarios and the gallery"}}}},
    "/api/reset": {"post": {"responses": {"200": {"description": "reset"}, "403": ERROR}}},
}


def document(scenarios: Iterable[Scenario]) -> dict[str, Any]:
    paths: dict[str, Any] = dict(OPERATOR)
    for scenario in scenarios:
        for route in scenario.routes:
            paths.setdefault("/{variant}" + route.path, {})[route.method.lower()] = route.spec
        for rung in scenario.rungs:  # served by the broken variant only
            spec = {**rung.spec, "parameters": [p for p in rung.spec["parameters"] if p is not VARIANT]}
            paths.setdefault("/broken" + rung.path, {})[rung.method.lower()] = spec
    return {
        "openapi": "3.1.0",
        "info": {"title": "asyncio-pitfalls", "version": "0.1.0"},
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
            }
        },
    }
