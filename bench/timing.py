"""Timing from PostgreSQL: when chats finished, and each chat's checkpoint phase from
the rows' own timestamps (`created_at`, epoch seconds)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import asyncpg


@dataclass
class Phase:
    """A chat's checkpoint phase, from PostgreSQL timestamps (epoch seconds).

    started: the `checkpointing` stage event (written when generation has ended);
    finished: the last chunk row; `chunks` rows saved out of `total`.
    """

    workflow_id: str
    stage: str
    started: float | None
    finished: float | None
    chunks: int
    total: int | None

    @property
    def seconds(self) -> float | None:
        if self.started is None or self.finished is None:
            return None
        return self.finished - self.started


async def checkpoint_phases(
    db: asyncpg.Pool | asyncpg.Connection, workflow_ids: list[str], schema: str = "public"
) -> dict[str, Phase]:
    rows = await db.fetch(
        f"""
        SELECT g.workflow_id, g.stage, g.total_chunks,
               (SELECT extract(epoch FROM e.created_at)::float8 FROM {schema}.chat_events e
                 WHERE e.workflow_id = g.workflow_id AND e.type = 'stage'
                   AND e.data->>'stage' = 'checkpointing'
                 ORDER BY e.seq LIMIT 1) AS started,
               (SELECT extract(epoch FROM max(c.created_at))::float8 FROM {schema}.chunks c
                 WHERE c.workflow_id = g.workflow_id) AS finished,
               (SELECT count(*) FROM {schema}.chunks c WHERE c.workflow_id = g.workflow_id)
                 AS chunks
        FROM {schema}.generations g WHERE g.workflow_id = ANY($1::text[])
        """,
        workflow_ids,
    )
    return {
        r["workflow_id"]: Phase(
            r["workflow_id"],
            r["stage"],
            r["started"],
            r["finished"],
            r["chunks"],
            r["total_chunks"],
        )
        for r in rows
    }


async def wait_finished(
    db: asyncpg.Pool,
    workflow_ids: list[str],
    timeout_s: float,
    schema: str = "public",
    interval_s: float = 0.25,
) -> None:
    """Wait until every chat's generation row is in a final stage."""
    deadline = time.monotonic() + timeout_s
    while True:
        done = await db.fetchval(
            f"""SELECT count(*) FROM {schema}.generations
                WHERE workflow_id = ANY($1::text[])
                  AND stage IN ('completed', 'failed', 'cancelled')""",
            workflow_ids,
        )
        if done >= len(workflow_ids):
            failed = await db.fetch(
                f"""SELECT workflow_id, stage, error FROM {schema}.generations
                    WHERE workflow_id = ANY($1::text[]) AND stage <> 'completed'""",
                workflow_ids,
            )
            if failed:
                raise RuntimeError(f"chats did not complete: {[dict(r) for r in failed][:3]}")
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{done}/{len(workflow_ids)} chats finished after {timeout_s} s")
        await asyncio.sleep(interval_s)
