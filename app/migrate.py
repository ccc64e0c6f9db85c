"""Plain SQL migrations (yoyo style): ``migrations/NNNN_name.sql`` applied in order, each in a transaction,
recorded in ``_migrations``; ``NNNN_name.rollback.sql`` undoes one. The database is created if missing."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import psycopg2.sql

from .settings import database_name, mask, with_database

log = logging.getLogger("app.migrate")

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_LOCK_ID = 0x70_1F_A1_15  # pg_advisory_lock key: two app replicas never migrate at once


@dataclass(frozen=True)
class Migration:
    id: str
    up: Path
    down: Path | None


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        if path.name.endswith(".rollback.sql"):
            continue
        down = path.with_name(path.stem + ".rollback.sql")
        found.append(Migration(path.stem, path, down if down.exists() else None))
    return found


def ensure_database(url: str) -> bool:
    """Create the database named in ``url`` if it does not exist; True when it was created."""
    name = database_name(url)
    conn = psycopg2.connect(with_database(url, "postgres"))
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone():
                return False
            try:
                cur.execute(psycopg2.sql.SQL("CREATE DATABASE {}").format(psycopg2.sql.Identifier(name)))
            except psycopg2.errors.DuplicateDatabase:
                return False  # created by a concurrent migrate
            log.info("created database %s", name)
            return True
    finally:
        conn.close()


def applied(url: str) -> list[str]:
    with _connect(url) as conn, conn.cursor() as cur:
        return _applied(cur)


def migrate(url: str, directory: Path = MIGRATIONS_DIR, *, target: str | None = None) -> list[str]:
    """Apply every pending migration (up to and including ``target``); returns the ids applied now."""
    ensure_database(url)
    done: list[str] = []
    with _connect(url) as conn, conn.cursor() as cur:
        already = set(_applied(cur))
        for migration in discover(directory):
            if target is not None and migration.id > target:
                break
            if migration.id in already:
                continue
            cur.execute(migration.up.read_text())
            cur.execute("INSERT INTO _migrations (id) VALUES (%s)", (migration.id,))
            conn.commit()
            log.info("applied %s to %s", migration.id, mask(url))
            done.append(migration.id)
    return done


def rollback(url: str, steps: int = 1, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Undo the last ``steps`` applied migrations, newest first; returns the ids undone."""
    by_id = {m.id: m for m in discover(directory)}
    undone: list[str] = []
    with _connect(url) as conn, conn.cursor() as cur:
        for migration_id in reversed(_applied(cur)[-steps:] if steps > 0 else []):
            down = by_id[migration_id].down
            if down is None:
                raise RuntimeError(f"migration {migration_id} has no rollback file")
            cur.execute(down.read_text())
            cur.execute("DELETE FROM _migrations WHERE id = %s", (migration_id,))
            conn.commit()
            log.info("rolled back %s", migration_id)
            undone.append(migration_id)
    return undone


class _connect:
    """A connection holding the migrations lock, with the bookkeeping table in place."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg2.connect(url)

    def __enter__(self) -> psycopg2.extensions.connection:
        with self.conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
            cur.execute(
                "CREATE TABLE IF NOT EXISTS _migrations ("
                " id text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
        self.conn.commit()
        return self.conn

    def __exit__(self, *exc: object) -> None:
        self.conn.rollback()
        self.conn.close()  # closing the session releases the advisory lock


def _applied(cur: psycopg2.extensions.cursor) -> list[str]:
    cur.execute("SELECT id FROM _migrations ORDER BY id")
    return [row[0] for row in cur.fetchall()]
