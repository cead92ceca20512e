"""Every query on `llm_calls`: the generations a provider ran for each chat, and their bill."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True)
class OpenCall:
    """A generation left `running` (its worker died): what is needed to close it."""

    call_key: str
    attempt: int
    model: str | None
    prompt_tokens: int | None
    chars_seen: int
    """Characters of this call's text that reached the chat's event log (live deltas)."""
    mode: str = "restart"
    """resume: `call_key` is the provider's id of a background response."""


class LlmCallStore:
    """Idempotent writes and reads of `llm_calls`, over an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def begin(
        self,
        workflow_id: str,
        call_key: str,
        attempt: int,
        mode: str,
        model: str | None,
        prompt_tokens: int | None,
        run_id: str = "",
    ) -> None:
        """Record a generation the provider accepted; a second begin of the same key
        (a re-attach, a retried write) changes nothing."""
        await self._pool.execute(
            """
            INSERT INTO llm_calls (workflow_id, call_key, attempt, mode, model, prompt_tokens,
                                   usage_estimated, run_id)
            VALUES ($1, $2, $3, $4, $5, $6, true, $7)
            ON CONFLICT (workflow_id, call_key) DO NOTHING
            """,
            workflow_id,
            call_key,
            attempt,
            mode,
            model,
            prompt_tokens,
            run_id,
        )

    async def finish(
        self,
        workflow_id: str,
        call_key: str,
        *,
        status: str,
        model: str | None,
        prompt_tokens: int,
        completion_tokens: int,
        estimated: bool,
        cost_usd: float | None,
        finish_reason: str | None = None,
        error: str | None = None,
    ) -> None:
        """Close a generation with its final usage (idempotent: the last close wins)."""
        await self._pool.execute(
            """
            UPDATE llm_calls SET status = $3, model = COALESCE($4, model), prompt_tokens = $5,
                   completion_tokens = $6, usage_estimated = $7, cost_usd = $8,
                   finish_reason = $9, error = $10, ended_at = now()
            WHERE workflow_id = $1 AND call_key = $2
            """,
            workflow_id,
            call_key,
            status,
            model,
            prompt_tokens,
            completion_tokens,
            estimated,
            cost_usd,
            finish_reason,
            error,
        )

    async def open_calls(self, workflow_id: str, except_key: str | None) -> list[OpenCall]:
        """Calls of the chat still `running`, but `except_key` (the one being resumed),
        with the characters of their attempt's live deltas."""
        rows = await self._pool.fetch(
            """
            SELECT l.call_key, l.attempt, l.model, l.prompt_tokens, l.mode,
                   COALESCE((SELECT sum(length(e.data->>'text')) FROM chat_events e
                             WHERE e.workflow_id = l.workflow_id AND e.type = 'delta'
                               AND e.run_id = l.run_id
                               AND (e.data->>'attempt')::int = l.attempt
                               AND (l.mode = 'restart'
                                    OR e.data->>'response_id' = l.call_key)), 0) AS chars_seen
            FROM llm_calls l
            WHERE l.workflow_id = $1 AND l.status = 'running'
              AND l.call_key IS DISTINCT FROM $2
            """,
            workflow_id,
            except_key,
        )
        return [
            OpenCall(
                r["call_key"],
                r["attempt"],
                r["model"],
                r["prompt_tokens"],
                int(r["chars_seen"]),
                r["mode"],
            )
            for r in rows
        ]
