"""Every query on the `generations` and `chunks` tables."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from common.models import GenerationUpdate, Stage, Turn


@dataclass(frozen=True)
class ChunkRow:
    id: int
    text: str
    worker: str
    attempt: int


@dataclass(frozen=True)
class GenerationRow:
    workflow_id: str
    conversation_id: str | None
    user_id: str
    prompt: str
    model: str | None
    provider: str | None
    stage: Stage
    status: str
    total_chunks: int | None
    chunks_saved: int
    prompt_tokens: int | None
    completion_tokens: int | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    last_event_seq: int = 0
    cache_key: str | None = None
    cache_hit: bool = False
    cached_from: str | None = None
    cost_usd: float | None = None
    saved_usd: float | None = None
    saved_ms: int | None = None
    generation_mode: str | None = None
    finish_reason: str | None = None
    error_type: str | None = None
    retry_of: str | None = None
    llm_calls: int = 0
    billed_prompt_tokens: int = 0
    billed_completion_tokens: int = 0
    billed_estimated: bool = False
    billed_cost_usd: float | None = None
    unpriced_calls: int = 0


@dataclass(frozen=True)
class ChatEvent:
    """One entry of a chat's event log; `seq` is the SSE event id."""

    seq: int
    type: str
    data: dict[str, Any]


EVENTS_CHANNEL = "chat_events"
"""PostgreSQL NOTIFY channel; the payload is the workflow id of the chat that changed."""

_FINAL_STAGES = [s.value for s in Stage if s.is_final]

_UPSERT_GENERATION = """
    INSERT INTO generations AS g (
        workflow_id, stage, conversation_id, user_id, prompt, model, provider,
        total_chunks, prompt_tokens, completion_tokens, error, completed_at,
        cache_key, cache_hit, cached_from, saved_ms, saved_usd, cost_usd, generation_mode,
        finish_reason, error_type, retry_of)
    VALUES ($1, $2, $3, COALESCE($4, 'anonymous'), COALESCE($5, ''), $6, $7,
            $8, $9, $10, $11, CASE WHEN $2 = ANY($12::text[]) THEN now() END,
            $13, COALESCE($14, false), $15, $16, $17, $18, $19, $20, $21, $22)
    ON CONFLICT (workflow_id) DO UPDATE SET
        stage             = CASE WHEN g.stage = ANY($12::text[]) THEN g.stage
                                 ELSE EXCLUDED.stage END,
        conversation_id   = COALESCE($3, g.conversation_id),
        user_id           = COALESCE($4, g.user_id),
        prompt            = COALESCE($5, g.prompt),
        model             = COALESCE($6, g.model),
        provider          = COALESCE($7, g.provider),
        total_chunks      = COALESCE($8, g.total_chunks),
        prompt_tokens     = COALESCE($9, g.prompt_tokens),
        completion_tokens = COALESCE($10, g.completion_tokens),
        error             = COALESCE($11, g.error),
        updated_at        = now(),
        completed_at      = COALESCE(g.completed_at, EXCLUDED.completed_at),
        cache_key         = COALESCE($13, g.cache_key),
        cache_hit         = COALESCE($14, g.cache_hit),
        cached_from       = COALESCE($15, g.cached_from),
        saved_ms          = COALESCE($16, g.saved_ms),
        saved_usd         = COALESCE($17, g.saved_usd),
        cost_usd          = COALESCE($18, g.cost_usd),
        generation_mode   = COALESCE($19, g.generation_mode),
        finish_reason     = COALESCE($20, g.finish_reason),
        error_type        = COALESCE($21, g.error_type),
        retry_of          = COALESCE($22, g.retry_of)
"""


def _upsert_args(update: GenerationUpdate, cost_usd: float | None) -> tuple[object, ...]:
    return (
        update.workflow_id,
        update.stage.value,
        update.conversation_id,
        update.user_id,
        update.prompt,
        update.model,
        update.provider,
        update.total_chunks,
        update.prompt_tokens,
        update.completion_tokens,
        update.error,
        _FINAL_STAGES,
        update.cache_key,
        update.cache_hit,
        update.cached_from,
        update.saved_ms,
        update.saved_usd,
        cost_usd,
        update.generation_mode,
        update.finish_reason,
        update.error_type,
        update.retry_of,
    )


async def append_event(
    conn: asyncpg.Connection, workflow_id: str, type_: str, data: dict[str, Any]
) -> int:
    """Allocate the chat's next seq (row lock on the generation) and insert the event.

    It is one statement, so alone it is its own transaction; inside a larger one, the
    lock is held until that commits. Either way the lock, held until commit, is what
    makes sequence numbers of one chat become visible in order. NOTIFY is delivered at
    commit.
    """
    seq: int | None = await conn.fetchval(
        """
        WITH next AS (
            UPDATE generations SET last_event_seq = last_event_seq + 1
            WHERE workflow_id = $1 RETURNING last_event_seq
        ), inserted AS (
            INSERT INTO chat_events (workflow_id, seq, type, data)
            SELECT $1, last_event_seq, $2, $3::jsonb FROM next
            RETURNING seq
        )
        SELECT seq, pg_notify($4, $1) FROM inserted
        """,
        workflow_id,
        type_,
        json.dumps(data),
        EVENTS_CHANNEL,
    )
    if seq is None:
        raise LookupError(f"no generation row for {workflow_id}: cannot log {type_}")
    return seq


class ChatStore:
    """Reads and idempotent writes of chats, over an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def ping(self) -> None:
        """Raise unless PostgreSQL answers and the schema is in place."""
        await self._pool.fetchval("SELECT count(*) FROM schema_migrations")

    async def record_generation(
        self, update: GenerationUpdate, cost_usd: float | None = None
    ) -> None:
        """Upsert the generation row; `None` fields keep what is stored.

        When the stage changes, a `stage` event (and, for a final stage, a terminal
        `completed`/`failed`/`cancelled` event) is appended to the chat's event log in
        the same transaction. Idempotent: the same update applied twice leaves the same
        row and appends nothing the second time.

        A final stage is never left: an update of an earlier stage that arrives after it
        (a `record_generation` still running on a worker when the chat was cancelled)
        fills in its fields but keeps the stage, and appends nothing after the terminal
        event.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            previous = await conn.fetchval(
                "SELECT stage FROM generations WHERE workflow_id = $1 FOR UPDATE",
                update.workflow_id,
            )
            await conn.execute(_UPSERT_GENERATION, *_upsert_args(update, cost_usd))
            if previous == update.stage.value or (previous and Stage(previous).is_final):
                return
            stage_event: dict[str, Any] = {"stage": update.stage.value}
            if update.cache_hit:
                stage_event["cache_hit"] = True
            if update.total_chunks is not None:
                stage_event["total_chunks"] = update.total_chunks
            await append_event(conn, update.workflow_id, "stage", stage_event)
            if update.stage.is_final:
                await append_event(
                    conn, update.workflow_id, update.stage.value, {"error": update.error}
                )

    async def set_generation_mode(self, workflow_id: str, mode: str) -> None:
        """Record the mode a worker chose for an `auto` chat (what a retry will do)."""
        await self._pool.execute(
            "UPDATE generations SET generation_mode = $2 WHERE workflow_id = $1", workflow_id, mode
        )

    async def insert_chunk(
        self, workflow_id: str, index: int, text: str, worker: str, attempt: int, total: int
    ) -> bool:
        """Insert chunk `index` once, with its `chunk` event; False when it was already there.

        The first writer wins: a retry after a crash that happened after the commit
        keeps the original row (and its worker and attempt) and appends no event.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            inserted = await conn.fetchval(
                """
                INSERT INTO chunks (workflow_id, idx, text, worker, attempt)
                VALUES ($1, $2, $3, $4, $5)
                ON CONFLICT (workflow_id, idx) DO NOTHING
                RETURNING true
                """,
                workflow_id,
                index,
                text,
                worker,
                attempt,
            )
            if not inserted:
                return False
            await append_event(
                conn, workflow_id, "chunk", {"index": index, "text": text, "total": total}
            )
            return True

    async def append_event(self, workflow_id: str, type_: str, data: dict[str, Any]) -> int:
        """Append one event to the chat's log (and notify listeners); return its seq.

        One statement, so its own transaction: the row lock and the NOTIFY last until
        it commits, as append_event requires, without BEGIN and COMMIT round trips.
        """
        async with self._pool.acquire() as conn:
            return await append_event(conn, workflow_id, type_, data)

    async def last_preview_event(self, workflow_id: str) -> ChatEvent | None:
        """The chat's latest `delta` or `reset` event: where its live preview stands."""
        row = await self._pool.fetchrow(
            """
            SELECT seq, type, data FROM chat_events
            WHERE workflow_id = $1 AND type IN ('delta', 'reset')
            ORDER BY seq DESC LIMIT 1
            """,
            workflow_id,
        )
        return None if row is None else ChatEvent(row["seq"], row["type"], json.loads(row["data"]))

    async def events_after(
        self, workflow_id: str, after_seq: int, limit: int = 1000
    ) -> list[ChatEvent]:
        """Events of a chat with seq > `after_seq`, oldest first."""
        rows = await self._pool.fetch(
            """
            SELECT seq, type, data FROM chat_events
            WHERE workflow_id = $1 AND seq > $2 ORDER BY seq LIMIT $3
            """,
            workflow_id,
            after_seq,
            limit,
        )
        return [ChatEvent(r["seq"], r["type"], json.loads(r["data"])) for r in rows]

    async def get_generation(self, workflow_id: str) -> GenerationRow | None:
        row = await self._pool.fetchrow(
            """
            SELECT g.*, (SELECT count(*) FROM chunks c WHERE c.workflow_id = g.workflow_id)
                        AS chunks_saved,
                   b.*
            FROM generations g,
                 LATERAL (SELECT count(*) AS llm_calls,
                                 coalesce(sum(l.prompt_tokens), 0) AS billed_prompt_tokens,
                                 coalesce(sum(l.completion_tokens), 0)
                                     AS billed_completion_tokens,
                                 coalesce(bool_or(l.usage_estimated), false) AS billed_estimated,
                                 sum(l.cost_usd) AS billed_cost_usd,
                                 count(*) FILTER (WHERE l.cost_usd IS NULL
                                                  AND l.status <> 'running') AS unpriced_calls
                          FROM llm_calls l WHERE l.workflow_id = g.workflow_id) b
            WHERE g.workflow_id = $1
            """,
            workflow_id,
        )
        if row is None:
            return None
        values = dict(row)
        values["stage"] = Stage(values["stage"])
        for money in ("cost_usd", "saved_usd", "billed_cost_usd"):
            if values.get(money) is not None:
                values[money] = float(values[money])
        return GenerationRow(**values)

    async def get_chunks(self, workflow_id: str, from_id: int, limit: int = 500) -> list[ChunkRow]:
        """Chunks `from_id`, `from_id + 1`, ... up to the first one not saved yet.

        Chunks may be saved out of order (several in flight); a reader following a
        cursor must never skip one, so the answer stops at the first gap.
        """
        rows = await self._pool.fetch(
            """
            SELECT idx, text, worker, attempt FROM chunks
            WHERE workflow_id = $1 AND idx >= $2
            ORDER BY idx LIMIT $3
            """,
            workflow_id,
            from_id,
            limit,
        )
        chunks: list[ChunkRow] = []
        for expected, row in enumerate(rows, start=from_id):
            if row["idx"] != expected:
                break
            chunks.append(ChunkRow(row["idx"], row["text"], row["worker"], row["attempt"]))
        return chunks

    async def conversation_turns(self, conversation_id: str, user_id: str) -> list[Turn]:
        """Earlier completed turns of a conversation, oldest first, as LLM messages."""
        rows = await self._pool.fetch(
            """
            SELECT g.prompt,
                   (SELECT string_agg(c.text, '' ORDER BY c.idx) FROM chunks c
                    WHERE c.workflow_id = g.workflow_id) AS answer
            FROM generations g
            WHERE g.conversation_id = $1 AND g.user_id = $2 AND g.stage = 'completed'
            ORDER BY g.created_at
            """,
            conversation_id,
            user_id,
        )
        turns: list[Turn] = []
        for row in rows:
            turns.append(Turn(role="user", content=row["prompt"]))
            turns.append(Turn(role="assistant", content=row["answer"] or ""))
        return turns
