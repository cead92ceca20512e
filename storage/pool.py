"""Connection pool creation and first-run database creation."""

from __future__ import annotations

import asyncio
import re
from urllib.parse import urlparse

import asyncpg
import structlog

log = structlog.get_logger(__name__)

_SAFE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


async def ensure_database(dsn: str) -> None:
    """Create the database named in `dsn` if the server does not have it yet.

    Lets a fresh embedded PostgreSQL, or a test server, be used with no manual step.
    """
    try:
        conn = await asyncpg.connect(dsn)
    except asyncpg.InvalidCatalogNameError:
        pass
    else:
        await conn.close()
        return
    database = urlparse(dsn).path.lstrip("/")
    if not _SAFE_NAME.fullmatch(database):
        raise ValueError(f"refusing to create a database with the name {database!r}")
    admin = await asyncpg.connect(dsn, database="postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
        log.info("database created", database=database)
    except asyncpg.DuplicateDatabaseError:
        pass
    finally:
        await admin.close()


async def create_pool(dsn: str, *, max_size: int = 10) -> asyncpg.Pool:
    """A pool that opens connections on demand, so it can be created while PostgreSQL is down.

    Each acquire then fails fast with a connection error that callers map to
    "PostgreSQL unavailable" instead of blocking start-up.
    """
    return await asyncpg.create_pool(
        dsn,
        min_size=0,
        max_size=max_size,
        timeout=5,
        command_timeout=10,
        reset=keep_session_state,
    )


async def keep_session_state(conn: asyncpg.Connection) -> None:
    """Nothing to reset when a connection goes back to the pool.

    Pooled connections never change session state (no SET, LISTEN or advisory lock:
    the event listener and the migrations use connections of their own), so asyncpg's
    default reset query (RESET ALL, UNLISTEN *, unlock all, ...) would be a round trip
    per release for nothing. asyncpg still rolls back a transaction left open.
    """


async def wait_for_database(dsn: str, *, attempts: int = 60, delay_s: float = 0.5) -> None:
    """Wait until PostgreSQL accepts connections (used at process start-up)."""
    for attempt in range(1, attempts + 1):
        try:
            await ensure_database(dsn)
            return
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            if attempt == attempts:
                raise
            if attempt == 1 or attempt % 10 == 0:
                log.info("waiting for PostgreSQL", error=str(exc), attempt=attempt)
            await asyncio.sleep(delay_s)
