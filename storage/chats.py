"""Every query on the `generations` and `chunks` tables."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

import asyncpg
import structlog

from common.models import GenerationUpdate, Stage, Usage
from common.preview import STOPPING_EVENT, shown_preview

log = structlog.get_logger(__name__)

CurrentRun = Callable[[str], Awaitable[str | None]]
"""Asks Temporal which run of a workflow id is the current one (None: unknown id)."""


class ChunkConflictError(Exception):
    """A chunk already saved for this (chat, run, index) holds a different text."""

    def __init__(self, workflow_id: str, run_id: str, index: int) -> None:
        self.workflow_id = workflow_id
        super().__init__(
            f"Chunk {index} of chat {workflow_id} (run {run_id or 'before run ids'}) is "
            "already saved with a different text: the answer was split differently, or "
            "generated again in the same run. Refusing to mix two answers."
        )


class StaleRunError(LookupError):
    """The writer belongs to a run that is no longer the chat's current one (reset)."""


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
    run_id: str = ""
    answer_run_id: str | None = None
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
    parent_id: str | None = None
    variant_of: str | None = None
    continues: str | None = None
    llm_calls: int = 0
    billed_prompt_tokens: int = 0
    billed_completion_tokens: int = 0
    billed_estimated: bool = False
    billed_cost_usd: float | None = None
    unpriced_calls: int = 0


@dataclass(frozen=True)
class TurnNode:
    """A chat as a turn of its conversation: where it sits among the branches."""

    workflow_id: str
    prompt: str
    stage: Stage
    finish_reason: str | None
    parent_id: str | None
    variant_of: str | None
    continues: str | None
    created_at: datetime


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
        finish_reason, error_type, retry_of, run_id, parent_id, variant_of, continues)
    VALUES ($1, $2, $3, COALESCE($4, 'anonymous'), COALESCE($5, ''), $6, $7,
            $8, $9, $10, $11, CASE WHEN $2 = ANY($12::text[]) THEN now() END,
            $13, COALESCE($14, false), $15, $16, $17, $18, $19, $20, $21, $22, $23,
            $24, $25, $26)
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
        retry_of          = COALESCE($22, g.retry_of),
        parent_id         = COALESCE($24, g.parent_id),
        variant_of        = COALESCE($25, g.variant_of),
        continues         = COALESCE($26, g.continues)
"""


def _upsert_args(
    update: GenerationUpdate, cost_usd: float | None, run_id: str
) -> tuple[object, ...]:
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
        run_id,
        update.parent_id,
        update.variant_of,
        update.continues,
    )


async def append_event(
    conn: asyncpg.Connection,
    workflow_id: str,
    type_: str,
    data: dict[str, Any],
    run_id: str = "",
    require_run: bool = False,
    require_open: bool = False,
) -> int:
    """Allocate the chat's next seq (row lock on the generation) and insert the event.

    It is one statement, so alone it is its own transaction; inside a larger one, the
    lock is held until that commits. Either way the lock, held until commit, is what
    makes sequence numbers of one chat become visible in order. NOTIFY is delivered at
    commit. `run_id` is the writer's run; with `require_run`, nothing is appended (and
    LookupError raised) unless it is the chat's current run; with `require_open`, unless
    the chat has not ended (live text of a generation that outlived its chat's end).
    """
    seq: int | None = await conn.fetchval(
        """
        WITH next AS (
            UPDATE generations SET last_event_seq = last_event_seq + 1
            WHERE workflow_id = $1 AND (NOT $6 OR run_id = $5)
              AND (NOT $7 OR stage <> ALL($8::text[]))
            RETURNING last_event_seq
        ), inserted AS (
            INSERT INTO chat_events (workflow_id, seq, type, data, run_id)
            SELECT $1, last_event_seq, $2, $3::jsonb, $5 FROM next
            RETURNING seq
        )
        SELECT seq, pg_notify($4, $1) FROM inserted
        """,
        workflow_id,
        type_,
        json.dumps(data),
        EVENTS_CHANNEL,
        run_id,
        require_run,
        require_open,
        _FINAL_STAGES,
    )
    if seq is None:
        raise LookupError(f"no generation row of this run for {workflow_id}: cannot log {type_}")
    return seq


class _Admission(Enum):
    NO_ROW = "no row"
    CURRENT = "current"
    STALE = "stale"


@dataclass(frozen=True)
class _Locked:
    admission: _Admission
    stage: Stage | None = None
    answer_run_id: str | None = None
    total_chunks: int | None = None


class ChatStore:
    """Reads and idempotent, run-aware writes of chats, over an asyncpg pool.

    Every write names the Temporal run that makes it (`run_id`, from the activity's
    info). A write from a run other than the row's current one asks `current_run`
    (Temporal) which run is current: a newer run (an operator's Reset) takes the chat
    over, and viewers get a `reset` event; a write from an older run is ignored.
    Without `current_run` (the gateway, which writes no chat), a new run is believed.
    """

    def __init__(self, pool: asyncpg.Pool, current_run: CurrentRun | None = None) -> None:
        self._pool = pool
        self._current_run = current_run

    async def ping(self) -> None:
        """Raise unless PostgreSQL answers and the schema is in place."""
        await self._pool.fetchval("SELECT count(*) FROM schema_migrations")

    async def record_generation(
        self, update: GenerationUpdate, cost_usd: float | None = None, run_id: str = ""
    ) -> None:
        """Upsert the generation row; `None` fields keep what is stored.

        When the stage changes, a `stage` event (and, for a final stage, a terminal
        `completed`/`failed`/`cancelled` event) is appended to the chat's event log in
        the same transaction. Idempotent: the same update applied twice leaves the same
        row and appends nothing the second time.

        Within a run a final stage is never left: an update of an earlier stage that
        arrives after it (a `record_generation` still running on a worker when the chat
        was cancelled) fills in its fields but keeps the stage, and appends nothing
        after the terminal event. A newer run (a Reset) does leave it.
        """
        before_answer = update.stage in (Stage.QUEUED, Stage.VALIDATING, Stage.GENERATING)
        async with self._pool.acquire() as conn, conn.transaction():
            locked = await self._admit(
                conn, update.workflow_id, run_id, update.stage, keeps_answer=not before_answer
            )
            if locked.admission is _Admission.STALE:
                return
            await conn.execute(_UPSERT_GENERATION, *_upsert_args(update, cost_usd, run_id))
            previous = locked.stage
            if previous is update.stage or (previous is not None and previous.is_final):
                return
            await self._append_stage_events(conn, update, run_id)

    async def _append_stage_events(
        self, conn: asyncpg.Connection, update: GenerationUpdate, run_id: str
    ) -> None:
        stage_event: dict[str, Any] = {"stage": update.stage.value}
        if update.cache_hit:
            stage_event["cache_hit"] = True
        if update.total_chunks is not None:
            stage_event["total_chunks"] = update.total_chunks
        await append_event(conn, update.workflow_id, "stage", stage_event, run_id)
        if update.stage.is_final:
            terminal: dict[str, Any] = {"error": update.error}
            if update.error_type:
                terminal["error_type"] = update.error_type
            await append_event(conn, update.workflow_id, update.stage.value, terminal, run_id)

    async def set_generation_mode(self, workflow_id: str, mode: str) -> None:
        """Record the mode a worker chose for an `auto` chat (what a retry will do)."""
        await self._pool.execute(
            "UPDATE generations SET generation_mode = $2 WHERE workflow_id = $1", workflow_id, mode
        )

    async def insert_chunk(
        self,
        workflow_id: str,
        index: int,
        text: str,
        worker: str,
        attempt: int,
        total: int,
        run_id: str = "",
    ) -> bool:
        """Insert chunk `index` of the chat's current answer once, with its `chunk` event.

        Returns False when it was already there (the first writer's row, worker and
        attempt are kept: a retry after a crash that happened after the commit appends
        no event) or when the writer's run is no longer current. The same index with a
        different text raises ChunkConflictError: two answers are never mixed.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            locked = await self._admit(
                conn, workflow_id, run_id, Stage.CHECKPOINTING, keeps_answer=True
            )
            if locked.admission is _Admission.STALE:
                return False
            if locked.admission is _Admission.NO_ROW:
                raise LookupError(f"no generation row for {workflow_id}: cannot save chunk")
            answer_run = locked.answer_run_id
            if answer_run is None:
                answer_run = run_id
                await conn.execute(
                    "UPDATE generations SET answer_run_id = $2 WHERE workflow_id = $1",
                    workflow_id,
                    answer_run,
                )
            inserted = await conn.fetchval(
                """
                INSERT INTO chunks (workflow_id, run_id, idx, text, worker, attempt, writer_run_id)
                VALUES ($1, $2, $3, $4, $5, $6, $7)
                ON CONFLICT (workflow_id, run_id, idx) DO NOTHING
                RETURNING true
                """,
                workflow_id,
                answer_run,
                index,
                text,
                worker,
                attempt,
                run_id,
            )
            if not inserted:
                stored = await conn.fetchval(
                    "SELECT text FROM chunks WHERE workflow_id = $1 AND run_id = $2 AND idx = $3",
                    workflow_id,
                    answer_run,
                    index,
                )
                if stored != text:
                    raise ChunkConflictError(workflow_id, answer_run, index)
                return False
            await append_event(
                conn,
                workflow_id,
                "chunk",
                {"index": index, "text": text, "total": total},
                run_id,
            )
            return True

    async def copy_answer(
        self, workflow_id: str, chunks: list[str], worker: str, run_id: str = ""
    ) -> None:
        """Write a cached answer as this run's answer (chunks and their events), idempotently."""
        async with self._pool.acquire() as conn, conn.transaction():
            locked = await self._admit(
                conn, workflow_id, run_id, Stage.VALIDATING, keeps_answer=False
            )
            if locked.admission is _Admission.STALE:
                return
            await conn.execute(
                "UPDATE generations SET answer_run_id = $2 WHERE workflow_id = $1",
                workflow_id,
                run_id,
            )
            for index, text in enumerate(chunks):
                inserted = await conn.fetchval(
                    """
                    INSERT INTO chunks (workflow_id, run_id, idx, text, worker, attempt,
                                        writer_run_id)
                    VALUES ($1, $2, $3, $4, $5, 1, $2)
                    ON CONFLICT (workflow_id, run_id, idx) DO NOTHING RETURNING true
                    """,
                    workflow_id,
                    run_id,
                    index,
                    text,
                    worker,
                )
                if inserted:
                    await append_event(
                        conn,
                        workflow_id,
                        "chunk",
                        {"index": index, "text": text, "total": len(chunks)},
                        run_id,
                    )

    async def append_event(
        self, workflow_id: str, type_: str, data: dict[str, Any], run_id: str = ""
    ) -> int:
        """Append one event to the chat's log (and notify listeners); return its seq.

        The common case (the writer's run is current) is one statement, so its own
        transaction: the row lock and the NOTIFY last until it commits, as append_event
        requires, without BEGIN and COMMIT round trips. A run that is not the row's
        takes the slow path: it takes the chat over (StaleRunError if it is older). Once
        the chat has ended nothing is appended (LookupError): the live text of a
        generation that outlives its chat (terminated, it stops at its next heartbeat)
        never follows the terminal event.
        """
        async with self._pool.acquire() as conn:
            try:
                return await append_event(
                    conn, workflow_id, type_, data, run_id, require_run=bool(run_id),
                    require_open=True,
                )  # fmt: skip
            except LookupError:
                if not run_id:
                    raise
            async with conn.transaction():
                locked = await self._admit(
                    conn, workflow_id, run_id, Stage.GENERATING, keeps_answer=False
                )
                if locked.admission is _Admission.STALE:
                    raise StaleRunError(f"run {run_id} of {workflow_id} is no longer current")
                # The chat ended (an operator terminated it): nothing after its end event.
                return await append_event(conn, workflow_id, type_, data, run_id, require_open=True)

    async def close_run(
        self,
        workflow_id: str,
        run_id: str,
        stage: Stage,
        error: str,
        error_type: str,
    ) -> bool:
        """Close the record of a run that ended without closing it itself (terminated,
        timed out): the final stage, its message, a terminal event. Returns False when
        the record already says this run ended (nothing to repair)."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT run_id, stage FROM generations WHERE workflow_id = $1 FOR UPDATE",
                workflow_id,
            )
            if row is None:
                return False
            same_run = row["run_id"] in ("", run_id)
            if same_run and Stage(row["stage"]).is_final:
                return False
            if not same_run:
                await self._switch_run(
                    conn, workflow_id, row["run_id"], run_id, stage, keeps_answer=True
                )
            await conn.execute(
                """
                UPDATE generations SET stage = $2, error = $3, error_type = $4, run_id = $5,
                       completed_at = now(), updated_at = now()
                WHERE workflow_id = $1
                """,
                workflow_id,
                stage.value,
                error,
                error_type,
                run_id,
            )
            update = GenerationUpdate(workflow_id, stage, error=error, error_type=error_type)
            await self._append_stage_events(conn, update, run_id)
            return True

    async def unfinished_chats(self, older_than_s: float, limit: int) -> list[str]:
        """Chats whose record says running and has not changed for `older_than_s`."""
        rows = await self._pool.fetch(
            """
            SELECT workflow_id FROM generations
            WHERE status = 'running' AND updated_at < now() - make_interval(secs => $1)
            ORDER BY updated_at LIMIT $2
            """,
            older_than_s,
            limit,
        )
        return [r["workflow_id"] for r in rows]

    async def _admit(
        self,
        conn: asyncpg.Connection,
        workflow_id: str,
        run_id: str,
        stage: Stage,
        *,
        keeps_answer: bool,
    ) -> _Locked:
        """Lock the chat's row and decide whether `run_id` may write it.

        A write of another run than the row's asks Temporal: if the writer is the current
        run, it takes the chat over (`_switch_run`, at `stage`; `keeps_answer` when it
        continues its predecessor's answer, as a run reset mid-checkpoint does).
        """
        row = await conn.fetchrow(
            """
            SELECT run_id, stage, answer_run_id, total_chunks FROM generations
            WHERE workflow_id = $1 FOR UPDATE
            """,
            workflow_id,
        )
        if row is None:
            return _Locked(_Admission.NO_ROW)
        locked = _Locked(
            _Admission.CURRENT, Stage(row["stage"]), row["answer_run_id"], row["total_chunks"]
        )
        if not run_id or row["run_id"] == run_id:
            return locked
        if row["run_id"] == "":  # written before runs were recorded: adopt it quietly
            await conn.execute(
                "UPDATE generations SET run_id = $2 WHERE workflow_id = $1", workflow_id, run_id
            )
            return locked
        current = run_id if self._current_run is None else await self._current_run(workflow_id)
        if current != run_id:
            log.info(
                "write from a run that is no longer current ignored",
                workflow_id=workflow_id,
                writer_run=run_id,
                current_run=current,
            )
            return _Locked(_Admission.STALE)
        return await self._switch_run(
            conn, workflow_id, row["run_id"], run_id, stage, keeps_answer=keeps_answer
        )

    async def _switch_run(
        self,
        conn: asyncpg.Connection,
        workflow_id: str,
        previous_run: str,
        run_id: str,
        stage: Stage,
        *,
        keeps_answer: bool,
    ) -> _Locked:
        """Make `run_id` the chat's current run (it was reset from `previous_run`).

        Viewers get a `reset` event (drop everything shown), the stage, and, when the
        new run continues the same answer, that answer's chunks saved so far: what
        follows is one run's answer, never a mix.
        """
        row = await conn.fetchrow(
            """
            UPDATE generations SET
                run_id = $2, stage = $3, completed_at = NULL, error = NULL, error_type = NULL,
                updated_at = now(),
                answer_run_id     = CASE WHEN $4 THEN answer_run_id END,
                total_chunks      = CASE WHEN $4 THEN total_chunks END,
                prompt_tokens     = CASE WHEN $4 THEN prompt_tokens END,
                completion_tokens = CASE WHEN $4 THEN completion_tokens END,
                finish_reason     = CASE WHEN $4 THEN finish_reason END,
                cost_usd          = CASE WHEN $4 THEN cost_usd END,
                cache_hit         = CASE WHEN $4 THEN cache_hit ELSE false END,
                cached_from       = CASE WHEN $4 THEN cached_from END,
                saved_ms          = CASE WHEN $4 THEN saved_ms END,
                saved_usd         = CASE WHEN $4 THEN saved_usd END
            WHERE workflow_id = $1
            RETURNING answer_run_id, total_chunks
            """,
            workflow_id,
            run_id,
            stage.value,
            keeps_answer,
        )
        assert row is not None
        log.warning(
            "chat taken over by a new run (reset by an operator)",
            workflow_id=workflow_id,
            previous_run=previous_run,
            run=run_id,
            keeps_answer=keeps_answer,
        )
        reason = "An operator reset this chat in Temporal: it runs again" + (
            " and continues the same answer." if keeps_answer else " from an earlier step."
        )
        await append_event(
            conn,
            workflow_id,
            "reset",
            {"scope": "run", "run_id": run_id, "previous_run_id": previous_run, "reason": reason},
            run_id,
        )
        await append_event(conn, workflow_id, "stage", {"stage": stage.value}, run_id)
        answer_run, total = row["answer_run_id"], row["total_chunks"]
        if answer_run is not None:
            chunks = await conn.fetch(
                "SELECT idx, text FROM chunks WHERE workflow_id = $1 AND run_id = $2 ORDER BY idx",
                workflow_id,
                answer_run,
            )
            for chunk in chunks:
                await append_event(
                    conn,
                    workflow_id,
                    "chunk",
                    {"index": chunk["idx"], "text": chunk["text"], "total": total},
                    run_id,
                )
        return _Locked(_Admission.CURRENT, stage, answer_run, total)

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
            SELECT g.*, (SELECT count(*) FROM chunks c
                         WHERE c.workflow_id = g.workflow_id AND c.run_id = g.answer_run_id)
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

    async def shown_answer(self, workflow_id: str) -> tuple[str, Usage, str | None]:
        """What a stopped chat's viewers had seen (common.preview), what its current
        run's LLM calls were billed, and the model they reported."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT type, data FROM chat_events WHERE workflow_id = $1"
                " AND type IN ('delta', 'reset', $2) ORDER BY seq",
                workflow_id,
                STOPPING_EVENT,
            )
            billed = await conn.fetchrow(
                """
                SELECT coalesce(sum(l.prompt_tokens), 0) AS prompt_tokens,
                       coalesce(sum(l.completion_tokens), 0) AS completion_tokens,
                       coalesce(bool_or(l.usage_estimated), false) AS estimated,
                       max(l.model) AS model
                FROM llm_calls l JOIN generations g USING (workflow_id)
                WHERE l.workflow_id = $1 AND l.run_id = g.run_id
                """,
                workflow_id,
            )
        text = shown_preview((r["type"], json.loads(r["data"])) for r in rows)
        usage = Usage(
            int(billed["prompt_tokens"]),
            int(billed["completion_tokens"]),
            estimated=bool(billed["estimated"]),
        )
        return text, usage, billed["model"]

    async def get_chunks(self, workflow_id: str, from_id: int, limit: int = 500) -> list[ChunkRow]:
        """Chunks `from_id`, `from_id + 1`, ... up to the first one not saved yet.

        Chunks may be saved out of order (several in flight); a reader following a
        cursor must never skip one, so the answer stops at the first gap.
        """
        rows = await self._pool.fetch(
            """
            SELECT idx, text, worker, attempt FROM chunks
            WHERE workflow_id = $1 AND idx >= $2
              AND run_id = (SELECT answer_run_id FROM generations WHERE workflow_id = $1)
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

    async def conversation_chats(self, conversation_id: str, user_id: str) -> list[TurnNode]:
        """Every chat of a user's conversation, oldest first, with its place in the tree
        of branches (no text: see `answers`)."""
        rows = await self._pool.fetch(
            """
            SELECT workflow_id, prompt, stage, finish_reason, parent_id, variant_of, continues,
                   created_at
            FROM generations WHERE conversation_id = $1 AND user_id = $2
            ORDER BY created_at, workflow_id
            """,
            conversation_id,
            user_id,
        )
        return [
            TurnNode(
                workflow_id=r["workflow_id"],
                prompt=r["prompt"],
                stage=Stage(r["stage"]),
                finish_reason=r["finish_reason"],
                parent_id=r["parent_id"],
                variant_of=r["variant_of"],
                continues=r["continues"],
                created_at=r["created_at"],
            )
            for r in rows
        ]

    async def answers(self, workflow_ids: list[str]) -> dict[str, str]:
        """The durable answer (all chunks of the answer run) of each chat."""
        rows = await self._pool.fetch(
            """
            SELECT g.workflow_id,
                   (SELECT string_agg(c.text, '' ORDER BY c.idx) FROM chunks c
                    WHERE c.workflow_id = g.workflow_id AND c.run_id = g.answer_run_id) AS answer
            FROM generations g WHERE g.workflow_id = ANY($1::text[])
            """,
            workflow_ids,
        )
        return {r["workflow_id"]: r["answer"] or "" for r in rows}

    async def stop_pending(self, workflow_id: str) -> bool:
        """Whether the chat was asked to stop and has not ended yet (its kept text is
        being saved)."""
        pending: bool = (
            await self._pool.fetchval(
                """
            SELECT EXISTS (SELECT 1 FROM chat_events e WHERE e.workflow_id = g.workflow_id
                           AND e.type = $2)
            FROM generations g WHERE g.workflow_id = $1 AND NOT (g.stage = ANY($3::text[]))
            """,
                workflow_id,
                STOPPING_EVENT,
                _FINAL_STAGES,
            )
            or False
        )
        return pending

    async def conversation_head(self, conversation_id: str, user_id: str) -> str | None:
        """The last chat of the branch the user is on (None: never chosen)."""
        head: str | None = await self._pool.fetchval(
            "SELECT head_id FROM conversation_heads WHERE conversation_id = $1 AND user_id = $2",
            conversation_id,
            user_id,
        )
        return head

    async def set_conversation_head(self, conversation_id: str, user_id: str, head_id: str) -> None:
        await self._pool.execute(
            """
            INSERT INTO conversation_heads (conversation_id, user_id, head_id)
            VALUES ($1, $2, $3)
            ON CONFLICT (conversation_id, user_id)
            DO UPDATE SET head_id = EXCLUDED.head_id, updated_at = now()
            """,
            conversation_id,
            user_id,
            head_id,
        )
