"""``GET /api/openapi.json``: an OpenAPI 3.1 description of every public route (CONTRACT.md), so tools such as
schemathesis can generate input against the running app."""

from __future__ import annotations

from typing import Any

from aiohttp import web

VARIANT = {"name": "variant", "in": "path", "required": True, "schema": {"enum": ["broken", "fixed"]}}
ERROR = {
    "description": "bad input",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
TEXT = {"type": "string", "minLength": 1, "maxLength": 200}


def _seconds(name: str, hi: float, default: float) -> dict[str, Any]:
    schema = {"type": "number", "minimum": 0, "maximum": hi, "default": default}
    return {"name": name, "in": "query", "required": False, "schema": schema}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _ok(description: str, code: str = "200") -> dict[str, Any]:
    return {code: {"description": description}, "400": ERROR, "404": ERROR, "413": ERROR, "503": ERROR}


CHANNEL = {
    "name": "channel",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,200}$"},
}

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "asyncio-pitfalls", "version": "0.1.0"},
    "paths": {
        "/healthz": {"get": {"responses": {"200": {"description": "healthy"}, "503": {"description": "not"}}}},
        "/ping": {"get": {"responses": {"200": {"description": "pong"}}}},
        "/api/openapi.json": {"get": {"responses": {"200": {"description": "this document"}}}},
        "/metrics": {"get": {"responses": {"200": {"description": "Prometheus text format"}}}},
        "/api/state": {"get": {"responses": {"200": {"description": "a snapshot per variant"}}}},
        "/api/reset": {"post": {"responses": {"200": {"description": "reset"}, "403": ERROR}}},
        "/{variant}/orders": {
            "post": {
                "parameters": [VARIANT, _seconds("hold", 5, 0.2)],
                "requestBody": _json_body(
                    {
                        "type": "object",
                        "required": ["customer", "items"],
                        "properties": {
                            "customer": TEXT,
                            "items": {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": 100,
                                "items": {
                                    "type": "object",
                                    "required": ["sku", "qty"],
                                    "properties": {
                                        "sku": TEXT,
                                        "qty": {"type": "integer", "minimum": 1, "maximum": 10000},
                                    },
                                },
                            },
                        },
                    }
                ),
                "responses": _ok("created", "201"),
            }
        },
        "/{variant}/orders/stats": {"get": {"parameters": [VARIANT], "responses": _ok("order stats")}},
        "/{variant}/reports/slow": {
            "get": {"parameters": [VARIANT, _seconds("seconds", 30, 1)], "responses": _ok("report")}
        },
        "/{variant}/transfers": {
            "post": {
                "parameters": [VARIANT, _seconds("hold", 5, 0.2)],
                "requestBody": _json_body(
                    {
                        "type": "object",
                        "required": ["from", "to", "amount"],
                        "properties": {
                            "from": {"enum": ["alice", "bob", "carol", "dave"]},
                            "to": {"enum": ["alice", "bob", "carol", "dave"]},
                            "amount": {"type": "integer", "minimum": 1, "maximum": 1000000},
                        },
                    }
                ),
                "responses": _ok("accepted", "202"),
            }
        },
        "/{variant}/transfers/stats": {"get": {"parameters": [VARIANT], "responses": _ok("transfer stats")}},
        "/{variant}/export": {"get": {"parameters": [VARIANT, _seconds("pace", 1, 0)], "responses": _ok("CSV")}},
        "/{variant}/events/stats": {"get": {"parameters": [VARIANT], "responses": _ok("stream stats")}},
        "/{variant}/events/{channel}": {
            "get": {"parameters": [VARIANT, CHANNEL], "responses": _ok("text/event-stream")},
            "post": {
                "parameters": [VARIANT, CHANNEL],
                "requestBody": _json_body(
                    {"type": "object", "required": ["data"], "properties": {"data": {**TEXT, "maxLength": 65536}}}
                ),
                "responses": _ok("published", "202"),
            },
        },
        "/{variant}/pitfalls": {"get": {"parameters": [VARIANT], "responses": _ok("the gallery")}},
        "/{variant}/pitfalls/{name}": {
            "get": {
                "parameters": [
                    VARIANT,
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                ],
                "responses": _ok("what happened"),
            }
        },
    },
    "components": {
        "schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
        }
    },
}


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(SPEC)
