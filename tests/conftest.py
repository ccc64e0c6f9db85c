"""Fixtures: a fresh, migrated test database on the real local Postgres, the real Redis, and the app served by
aiohttp's test server (which always runs with ``handler_cancellation=True``, like ``python -m app``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg2
import psycopg2.sql
import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from app.factory import create_app
from app.migrate import migrate
from app.scenarios import RESET_SQL
from app.settings import VARIANTS, Settings, database_name, with_database
from tests.helpers import App, free_port

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/pitfalls_test")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))


def _admin(url: str) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(url, connect_timeout=3)
    conn.autocommit = True
    return conn


def _end_variant_backends(url: str) -> None:
    with _admin(url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND usename = ANY(%s)",
            ([Settings(database_url=url).role(v) for v in VARIANTS],),
        )
    conn.close()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """Drop and re-create the test database, then run every migration on it (so each run tests them too)."""
    try:
        conn = _admin(with_database(TEST_DATABASE_URL, "postgres"))
    except psycopg2.OperationalError as exc:
        pytest.fail(f"Postgres is not reachable ({exc}); start it: see README 'Running the tests'", False)
    with conn.cursor() as cur:
        name = psycopg2.sql.Identifier(database_name(TEST_DATABASE_URL))
        cur.execute(psycopg2.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
    conn.close()
    migrate(TEST_DATABASE_URL)
    yield TEST_DATABASE_URL
    _end_variant_backends(TEST_DATABASE_URL)


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is not reachable ({exc}); start it: see README 'Running the tests'", False)
    return TEST_REDIS_URL


@pytest.fixture
def settings(database_url: str, redis_url: str) -> Iterator[Settings]:
    """Each test starts from empty tables and no leftover backends of the variants' roles."""
    with _admin(database_url) as conn, conn.cursor() as cur:
        cur.execute(RESET_SQL)
    conn.close()
    _end_variant_backends(database_url)
    yield Settings(database_url=database_url, redis_url=redis_url, shutdown_timeout=5)
    _end_variant_backends(database_url)


@pytest.fixture
def app(settings: Settings) -> web.Application:
    return create_app(settings)


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, app: web.Application) -> TestClient:
    return await aiohttp_client(app)


@pytest.fixture
def spawn_app(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., App]]:
    """Start apps as real processes (env overrides as keyword arguments); each must stop cleanly: no
    "Task was destroyed", "never retrieved" or traceback in its log, unless spawned with clean_log=False."""
    apps: list[App] = []

    def spawn(*, clean_log: bool = True, **env: str) -> App:
        port = free_port()
        environ = {"DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url, **env}
        app = App(tmp_path / f"app-{port}.log", environ, port=port)
        app.clean_log = clean_log
        apps.append(app)
        try:
            app.start(20)
        except RuntimeError as exc:
            pytest.fail(f"{exc}\n{(tmp_path / f'app-{port}.log').read_text()}", False)
        return app

    yield spawn
    for app in apps:
        try:
            app.stop(timeout=20)
        finally:
            app.kill()
        app.check_log()
