"""The resources a variant's scenarios can ask for, each opened and closed by a cleanup context. A scenario
lists the ones it needs, in order (``Scenario.contexts``); the factory opens them in that order and aiohttp
closes them in reverse."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import aiojobs
from aiohttp import web
from aiojobs.aiohttp import AIOJOBS_SCHEDULER

from .db import VariantDb, VariantRedis
from .keys import db_key, redis_key, settings_key, variant_key

log = logging.getLogger("app.resources")


async def postgres(app: web.Application) -> AsyncIterator[None]:
    """The variant's aiopg pool, as the variant's own role (its connection limit is the variant's own)."""
    settings, variant = app[settings_key], app[variant_key]
    db = VariantDb(
        role=settings.role(variant),
        dsn=settings.variant_dsn(variant),
        maxsize=settings.pg_pool_size,
        timeout=settings.pg_timeout,
    )
    await db.open()
    app[db_key] = db
    yield
    await db.close()


async def redis(app: web.Application) -> AsyncIterator[None]:
    """The variant's Redis client and its bounded connection pool."""
    settings = app[settings_key]
    limit = (
        settings.broken_redis_max_connections
        if app[variant_key] == "broken"
        else settings.fixed_redis_max_connections
    )
    app[redis_key] = client = VariantRedis(url=settings.redis_url, max_connections=limit)
    yield
    await client.close()


async def jobs(app: web.Application) -> AsyncIterator[None]:
    """The variant's aiojobs scheduler (what ``aiojobs.aiohttp.setup`` does, with our limits). Its close waits,
    bounded by ``shutdown_timeout``, for the jobs and shielded work it holds, then cancels what is left."""
    settings = app[settings_key]
    app[AIOJOBS_SCHEDULER] = scheduler = aiojobs.Scheduler(
        limit=settings.jobs_limit,
        pending_limit=settings.jobs_pending_limit,
        wait_timeout=settings.shutdown_timeout,
        exception_handler=_log_job_error,
    )
    yield
    await scheduler.wait_and_close()


def _log_job_error(scheduler: aiojobs.Scheduler, context: dict[str, Any]) -> None:
    """Every job wraps its work in ``admission.protected``, which has logged and counted the failure already:
    nothing to add but a trace."""
    log.debug("job failed: %s", context.get("message"))
