"""Connection pool creation (the database itself is created by storage.migrate)."""

from __future__ import annotations

import asyncpg
import structlog

log = structlog.get_logger(__name__)


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
