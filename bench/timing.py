"""Timing from PostgreSQL: when chats finished, and each chat's checkpoint phase from
the rows' own timestamps (`created_at`, epoch seconds)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import asyncpg
import httpx

from bench.stats import summary
from llm_simulator.stats import REQUEST_LOG_CAPACITY
from testing.stack import LocalStack


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


class TimedChat(Protocol):
    """A chat timed by the client: when its POST was sent, when its first delta came."""

    workflow_id: str
    prompt: str
    sent_wall: float
    delta_wall: float | None


async def first_token_breakdown(stack: LocalStack, runs: Sequence[TimedChat]) -> dict[str, Any]:
    """Where the time to first token goes, per step (PostgreSQL event timestamps and the
    simulator's request log; all clocks are this machine's)."""
    async with httpx.AsyncClient(base_url=stack.simulator_url, timeout=30) as sim:
        requests = (await sim.get("/sim/requests", params={"limit": REQUEST_LOG_CAPACITY})).json()
    received: dict[str, list[float]] = {}
    for entry in requests:
        prompt = entry["messages"][-1]["content"]
        at = datetime.fromisoformat(entry["received_at"]).timestamp()
        received.setdefault(prompt, []).append(at)
    conn = await asyncpg.connect(stack.database_url)
    try:
        rows = await conn.fetch(
            """
            SELECT workflow_id,
              min(extract(epoch FROM created_at)::float8)
                FILTER (WHERE type = 'stage' AND data->>'stage' = 'validating') AS validating,
              min(extract(epoch FROM created_at)::float8)
                FILTER (WHERE type = 'stage' AND data->>'stage' = 'generating') AS generating,
              min(extract(epoch FROM created_at)::float8)
                FILTER (WHERE type = 'delta' AND data->>'text' <> '') AS delta
            FROM chat_events WHERE workflow_id = ANY($1::text[]) GROUP BY workflow_id
            """,
            [r.workflow_id for r in runs],
        )
    finally:
        await conn.close()
    by_id = {r["workflow_id"]: r for r in rows}
    steps: dict[str, list[float]] = {
        "POST sent -> 'validating' stage row (start, 1st workflow task, record activity)": [],
        "'validating' -> 'generating' row (validate_prompt, record activity)": [],
        "'generating' row -> simulator receives the request (generate_full_text starts)": [],
        "simulator received -> first delta row (simulator TTFT, worker, INSERT)": [],
        "first delta row -> delta on the SSE stream (NOTIFY, gateway, HTTP)": [],
    }
    names = list(steps)
    for run in runs:
        row = by_id.get(run.workflow_id)
        delta_wall = run.delta_wall
        if delta_wall is None:  # no live text reached this viewer (it got the chunks)
            continue
        # the worker's request, not the direct one with the same prompt
        got = next(
            (t for t in received.get(run.prompt, []) if run.sent_wall <= t <= delta_wall),
            None,
        )
        if row is None or got is None or None in (row["validating"], row["generating"]):
            continue
        points = [run.sent_wall, row["validating"], row["generating"], got, row["delta"]]
        points.append(delta_wall)
        for i, name in enumerate(names):
            steps[name].append(points[i + 1] - points[i])
    return {name: summary(values, 1000) for name, values in steps.items()}
