"""Versioned schema migrations: applied once, by one step, before anything else starts.

Files in `storage/migrations/` are applied in name order, each in its own transaction,
and recorded in `schema_migrations` with the SHA-256 of their text. `python -m
storage.migrate` (run by `make up`, the test harness and the deployment's migrate job
before the workers and the gateway) creates the database if it does not exist and
applies what is missing; the workers and the gateway only wait until the schema their
code needs is there (`wait_for_schema`), so nothing races at a first start.

An applied migration whose file has changed since is refused, by the migrator and by
every process that waits for the schema: a migration is never edited, a new one is
added. A PostgreSQL advisory lock still serialises two migrators started at once.

Why not Alembic: the migrations are plain SQL that an operator can read and run by hand,
forward only, and the runner is these few lines; Alembic would add SQLAlchemy (unused
otherwise) and a second format for the same statements.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import asyncpg
import structlog

log = structlog.get_logger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_SAFE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_LOCK_KEY = 7_240_311_001  # any constant shared by every durable-chat process
_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


class MigrationError(Exception):
    """The database's schema cannot be used by this code (an applied migration changed)."""


@dataclass(frozen=True)
class Migration:
    version: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations() -> list[Migration]:
    return [Migration(p.stem, p.read_text()) for p in sorted(MIGRATIONS_DIR.glob("*.sql"))]


async def apply_migrations(dsn: str) -> list[str]:
    """Apply every migration not applied yet; return the versions applied now.

    Raises MigrationError when an applied migration's file has changed since.
    """
    conn = await asyncpg.connect(dsn)
    applied_now: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    text PRIMARY KEY,
                   applied_at timestamptz NOT NULL DEFAULT now());
               ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum text;"""
        )
        for migration in await _pending(conn, adopt=True):
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)",
                    migration.version,
                    migration.checksum,
                )
            applied_now.append(migration.version)
            log.info("migration applied", version=migration.version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
        await conn.close()
    return applied_now


async def _pending(conn: asyncpg.Connection, *, adopt: bool) -> list[Migration]:
    """Migrations not applied yet. An applied one with another checksum raises; one
    applied before checksums were kept gets its checksum recorded (with `adopt`)."""
    rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
    applied = {r["version"]: r["checksum"] for r in rows}
    pending: list[Migration] = []
    for migration in migrations():
        if migration.version not in applied:
            pending.append(migration)
        elif applied[migration.version] is None:
            if adopt:
                await conn.execute(
                    "UPDATE schema_migrations SET checksum = $2 WHERE version = $1",
                    migration.version,
                    migration.checksum,
                )
        elif applied[migration.version] != migration.checksum:
            raise MigrationError(
                f"migration {migration.version} was changed after it was applied to this "
                "database: restore its original text and add a new migration instead"
            )
    return pending


async def ensure_database(dsn: str) -> None:
    """Create the database named in `dsn` if the server does not have it yet (asked of
    the `postgres` database, so no connection to a missing one is ever attempted)."""
    database = urlparse(dsn).path.lstrip("/")
    admin = await asyncpg.connect(dsn, database="postgres")
    try:
        # Two migrators starting together: the second waits here, then finds it.
        await admin.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        if await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
            return
        if not _SAFE_NAME.fullmatch(database):
            raise ValueError(f"refusing to create a database with the name {database!r}")
        await admin.execute(f'CREATE DATABASE "{database}"')
        log.info("database created", database=database)
    finally:
        await admin.close()  # releases the session's advisory lock


async def migrate(dsn: str, wait_s: float = 60.0) -> list[str]:
    """What `python -m storage.migrate` does: wait for PostgreSQL (up to `wait_s`),
    create the database if needed, apply what is missing."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            await ensure_database(dsn)
            break
        except _DB_ERRORS as err:
            if time.monotonic() > deadline:
                raise
            log.info("waiting for PostgreSQL", error=str(err) or type(err).__name__)
            await asyncio.sleep(0.5)
    return await apply_migrations(dsn)


async def wait_for_schema(dsn: str, *, timeout_s: float | None = None) -> None:
    """Wait until the database has every migration this code knows (applied by the
    migrator), then return. Raises MigrationError at once for a changed migration, and
    TimeoutError after `timeout_s` (None: wait for ever)."""
    database = urlparse(dsn).path.lstrip("/")
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    last_said = 0.0
    while True:
        try:
            missing = await _missing(dsn, database)
        except _DB_ERRORS as err:
            missing = f"PostgreSQL does not answer ({str(err) or type(err).__name__})"
        if missing is None:
            return
        now = time.monotonic()
        if deadline is not None and now > deadline:
            raise TimeoutError(f"the schema is not ready: {missing}")
        if now - last_said >= 10:
            log.info("waiting for the schema (python -m storage.migrate)", missing=missing)
            last_said = now
        await asyncio.sleep(0.5)


async def _missing(dsn: str, database: str) -> str | None:
    """What the schema still lacks, or None when it is complete."""
    admin = await asyncpg.connect(dsn, database="postgres")
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
            return f"database {database!r} does not exist yet"
    finally:
        await admin.close()
    conn = await asyncpg.connect(dsn)
    try:
        if not await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"):
            return "no migration applied yet"
        has_checksums = await conn.fetchval(
            "SELECT count(*) FROM information_schema.columns "
            "WHERE table_name = 'schema_migrations' AND column_name = 'checksum'"
        )
        if not has_checksums:
            return "migrations applied by an older migrator: run the migrator"
        pending = await _pending(conn, adopt=False)
    finally:
        await conn.close()
    return f"migrations {', '.join(m.version for m in pending)} not applied" if pending else None


def main(argv: list[str] | None = None) -> int:
    """`python -m storage.migrate`: bring DATABASE_URL's schema up to date and exit."""
    from common.log import configure_logging
    from common.settings import get_settings

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument(
        "--wait", type=float, default=60.0, help="seconds to wait for PostgreSQL to answer"
    )
    args = parser.parse_args(argv)
    configure_logging("migrate")
    try:
        applied = asyncio.run(migrate(get_settings().database_url, args.wait))
    except MigrationError as err:
        log.error("migrations refused", reason=str(err))
        return 1
    log.info("schema up to date", applied_now=applied or "nothing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
