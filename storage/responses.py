"""The `responses` table: what the OpenAI-compatible API (/v1) keeps beside each chat.

A response is a chat (`generations`, `chunks`, `chat_events` of its workflow id) plus
this row: the parameters its object echoes, the conversation it was asked in, the
fingerprint of the create request (for `Idempotency-Key`) and when it expires.
Deleting a response deletes the chat's text with it (answer chunks, events, answer
cache entry, and the prompt in its `generations` row); the row itself and its
`llm_calls` stay, blanked, because they are the cost record (`/api/stats`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from common.models import Turn


@dataclass(frozen=True)
class ResponseRow:
    response_id: str
    workflow_id: str
    user_id: str
    api: str
    params: dict[str, Any]
    messages: list[Turn]
    request_hash: str
    background: bool
    stored: bool
    created_at: datetime
    expires_at: datetime


def _row(record: asyncpg.Record) -> ResponseRow:
    values = dict(record)
    values["params"] = json.loads(values["params"])
    values["messages"] = [Turn(**m) for m in json.loads(values["messages"])]
    return ResponseRow(**values)


class ResponseStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(
        self,
        *,
        response_id: str,
        workflow_id: str,
        user_id: str,
        api: str,
        params: dict[str, Any],
        messages: list[Turn],
        request_hash: str,
        background: bool,
        stored: bool,
        retention_s: float,
    ) -> ResponseRow:
        """Insert the row, or return the one already there (a retried create with the
        same Idempotency-Key): the caller compares its `request_hash`."""
        record = await self._pool.fetchrow(
            """
            WITH inserted AS (
                INSERT INTO responses (response_id, workflow_id, user_id, api, params,
                                       messages, request_hash, background, stored,
                                       expires_at)
                VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7, $8, $9,
                        now() + make_interval(secs => $10))
                ON CONFLICT (response_id) DO NOTHING
                RETURNING *
            )
            SELECT * FROM inserted
            UNION ALL
            SELECT * FROM responses WHERE response_id = $1
            LIMIT 1
            """,
            response_id,
            workflow_id,
            user_id,
            api,
            json.dumps(params),
            json.dumps([{"role": t.role, "content": t.content} for t in messages]),
            request_hash,
            background,
            stored,
            retention_s,
        )
        assert record is not None
        return _row(record)

    async def get(self, response_id: str) -> ResponseRow | None:
        record = await self._pool.fetchrow(
            "SELECT * FROM responses WHERE response_id = $1", response_id
        )
        return None if record is None else _row(record)

    async def delete(self, response_id: str) -> bool:
        """Delete the response and its chat's text; False when there was none."""
        async with self._pool.acquire() as conn, conn.transaction():
            workflow_id = await conn.fetchval(
                "DELETE FROM responses WHERE response_id = $1 RETURNING workflow_id",
                response_id,
            )
            if workflow_id is None:
                return False
            await _delete_chat(conn, workflow_id)
        return True

    async def purge_expired(self, limit: int) -> list[str]:
        """Delete up to `limit` responses past their expiry whose chat has finished (or
        never wrote a record); return their response ids. A chat still running is left
        for a later sweep: deleting under a live workflow would have it write again."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """
                DELETE FROM responses r
                WHERE r.response_id IN (
                    SELECT x.response_id FROM responses x
                    LEFT JOIN generations g ON g.workflow_id = x.workflow_id
                    WHERE x.expires_at <= now()
                      AND (g.workflow_id IS NULL OR g.status <> 'running')
                    ORDER BY x.expires_at
                    LIMIT $1
                    FOR UPDATE OF x SKIP LOCKED
                )
                RETURNING r.response_id, r.workflow_id
                """,
                limit,
            )
            for row in rows:
                await _delete_chat(conn, row["workflow_id"])
        return [row["response_id"] for row in rows]


async def _delete_chat(conn: asyncpg.Connection, workflow_id: str) -> None:
    await conn.execute("DELETE FROM chat_events WHERE workflow_id = $1", workflow_id)
    await conn.execute("DELETE FROM chunks WHERE workflow_id = $1", workflow_id)
    await conn.execute("DELETE FROM answer_cache WHERE owner_workflow_id = $1", workflow_id)
    await conn.execute("UPDATE generations SET prompt = '' WHERE workflow_id = $1", workflow_id)
