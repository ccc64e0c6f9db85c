"""Migrations: the database is created if missing, and every migration goes up, down and up again."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg2
import pytest

from app.migrate import applied, discover, migrate, rollback
from app.settings import with_database


@pytest.fixture
def scratch_url(database_url: str) -> Iterator[str]:
    url = with_database(database_url, f"pitfalls_scratch_{uuid.uuid4().hex[:8]}")
    yield url
    conn = psycopg2.connect(with_database(database_url, "postgres"))
    conn.autocommit = True
    with conn.cursor() as cur:
        name = url.rsplit("/", 1)[1]
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute(f'DROP ROLE IF EXISTS "{name}_broken", "{name}_fixed"')
    conn.close()


def tables(url: str) -> set[str]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        found = {row[0] for row in cur.fetchall()}
    conn.close()
    return found


def roles(url: str) -> dict[str, int]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT rolname, rolconnlimit FROM pg_roles WHERE rolname LIKE current_database() || '%'")
        found = dict(cur.fetchall())
    conn.close()
    return found


def test_stairway(scratch_url: str) -> None:
    every = [m.id for m in discover()]
    assert every == sorted(every) and len(every) >= 2
    for step in every:  # each migration up, down and up again (creating the database on the first)
        assert migrate(scratch_url, target=step) == [step]
        assert rollback(scratch_url, 1) == [step]
        assert migrate(scratch_url, target=step) == [step]
    assert migrate(scratch_url) == []  # idempotent
    assert {"orders", "order_items"} <= tables(scratch_url)
    name = scratch_url.rsplit("/", 1)[1]
    assert roles(scratch_url) == {f"{name}_broken": 30, f"{name}_fixed": 20}
    assert rollback(scratch_url, len(every)) == every[::-1]
    assert applied(scratch_url) == []
    assert tables(scratch_url) == {"_migrations"}
    assert roles(scratch_url) == {}
    assert migrate(scratch_url) == every


def test_every_migration_has_a_rollback() -> None:
    assert all(m.down is not None for m in discover())
