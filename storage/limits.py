"""Queries behind the gateway's per-user limits."""

from __future__ import annotations

import asyncpg


class LimitsStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def count_start(self, user_id: str) -> tuple[int, int]:
        """Count one chat start in the user's current one-minute window.

        Returns (starts in this window including this one, seconds until it ends).
        Atomic across gateway processes; windows older than an hour are dropped.
        """
        row = await self._pool.fetchrow(
            """
            WITH purge AS (
                DELETE FROM rate_windows
                WHERE user_id = $1 AND window_start < now() - interval '1 hour'
            )
            INSERT INTO rate_windows AS w (user_id, window_start, count)
            VALUES ($1, date_trunc('minute', now()), 1)
            ON CONFLICT (user_id, window_start) DO UPDATE SET count = w.count + 1
            RETURNING count,
                      ceil(extract(epoch FROM (window_start + interval '1 minute' - now())))::int
                          AS seconds_left
            """,
            user_id,
        )
        assert row is not None
        return int(row["count"]), max(1, int(row["seconds_left"]))

    async def owner_of(self, workflow_id: str) -> str | None:
        return await self._pool.fetchval(  # type: ignore[no-any-return]
            "SELECT user_id FROM generations WHERE workflow_id = $1", workflow_id
        )
