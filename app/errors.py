"""Every error leaves the service as ``{"error": str}`` JSON with the right status.

Nothing in a response leaks a stack trace or a DSN."""

from __future__ import annotations

import asyncio
import json
import logging

import psycopg2
import redis.exceptions
from aiohttp import web
from aiohttp.typedefs import Handler

from .db import connection_lost
from .logs import Throttled

log = logging.getLogger("app")
throttled = Throttled(log)  # database errors: one line per cause per second


def json_error(status: int, message: str, **extra: object) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


class BadRequest(web.HTTPBadRequest):
    """A 400 whose body is the JSON error; raise it from validation."""

    def __init__(self, message: str) -> None:
        super().__init__(text=json.dumps({"error": message}), content_type="application/json")


class ServiceUnavailable(web.HTTPServiceUnavailable):
    """A 503 whose body is the JSON error: over a bound, try again later (after ``retry_after`` seconds)."""

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        super().__init__(text=json.dumps({"error": message}), content_type="application/json", headers=headers)

    def refusal(self) -> web.Response:
        """The 503 as sent, and the connection closed after it. A client that ignores Retry-After and asks
        again at once must reconnect, and the loop takes at most the listen backlog's worth of new connections
        per turn: a storm of refusals crowds out less of the work admitted before it, which moves one step per
        loop turn (bench/RESULTS.md, 2c)."""
        response = web.Response(status=self.status, text=self.text, headers=self.headers)
        response.force_close()
        return response


def server_said(exc: BaseException) -> str:
    """The first line of what the server (or the driver) said, e.g. "too many connections for role ..."."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0].removeprefix("FATAL:").strip()


def database_error(exc: psycopg2.Error) -> web.Response:
    """503 for a Postgres that refuses or is gone; the server's own words only when they are about capacity."""
    said = server_said(exc)
    if "too many" in said:
        return json_error(503, "database refused the connection", detail=said)
    return json_error(503, "database unavailable")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ServiceUnavailable as exc:
        return exc.refusal()
    except web.HTTPException as exc:
        if exc.content_type == "application/json" or exc.empty_body:
            raise
        return _http_error(exc)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return json_error(400, "body is not valid JSON")
    except psycopg2.Error as exc:
        # The server's own words, once a second per kind ("too many connections for role ...": the cause the
        # README describes), with a count of the rest: the broken variant's flood cannot drown the log.
        cause = server_said(exc)
        throttled.warning(cause, "%s %s: database error: %s", request.method, request.path, cause)
        return database_error(exc)
    except AssertionError as exc:
        if not connection_lost(exc):
            raise
        log.warning("%s %s: a pooled connection died", request.method, request.path)
        return json_error(503, "database unavailable")
    except redis.exceptions.RedisError as exc:
        log.warning("%s %s: redis error: %s", request.method, request.path, exc)
        return json_error(503, "redis unavailable", detail=type(exc).__name__)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return json_error(500, "internal error")


def _http_error(exc: web.HTTPException) -> web.Response:
    message = "body over the 1 MiB limit" if exc.status == 413 else exc.reason
    response = json_error(exc.status, message)
    for name in ("Allow", "Location"):
        if name in exc.headers:
            response.headers[name] = exc.headers[name]
    return response
