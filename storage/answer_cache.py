"""Queries of the answer cache (`answer_cache`) and of cost totals."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

import asyncpg

# A claim older than this is considered abandoned and may be taken over: the last
# resort. Sooner, a chat waiting on a claim takes it over once Temporal says its owner
# no longer runs (activities.cache), and the reconciler releases the claims of chats
# that closed without releasing them (activities.reconcile). Longer than the longest
# legitimate generation plus checkpointing.
CLAIM_LEASE_S = 20 * 60


class ClaimResult(StrEnum):
    CLAIMED = "claimed"  # the caller owns the key: it calls the LLM
    READY = "ready"  # a fresh answer is stored: reuse it
    WAIT = "wait"  # another chat is generating this answer right now


@dataclass(frozen=True)
class CachedAnswer:
    owner_workflow_id: str
    text: str
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    generation_ms: int | None
    cost_usd: float | None
    finish_reason: str | None = None


@dataclass(frozen=True)
class Totals:
    generations: int
    llm_calls: int
    chats_with_llm_calls: int
    cache_hits: int
    prompt_tokens: int
    completion_tokens: int
    usage_estimated: bool
    cost_usd: float | None
    unpriced_llm_calls: int
    saved_usd: float
    saved_ms: int


class AnswerCacheStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def claim_or_get(
        self, cache_key: str, workflow_id: str
    ) -> tuple[ClaimResult, CachedAnswer | None]:
        """Claim `cache_key` for `workflow_id`, or return the ready answer, or say WAIT.

        Expired answers and abandoned claims are taken over. Idempotent for the owner:
        claiming again a key one already holds returns CLAIMED.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            inserted = await conn.fetchval(
                """
                INSERT INTO answer_cache (cache_key, state, owner_workflow_id)
                VALUES ($1, 'pending', $2)
                ON CONFLICT (cache_key) DO NOTHING RETURNING true
                """,
                cache_key,
                workflow_id,
            )
            if inserted:
                return ClaimResult.CLAIMED, None
            row = await conn.fetchrow(
                """
                SELECT *, (state = 'ready' AND expires_at > now()) AS fresh,
                          (state = 'pending' AND claimed_at > now() - make_interval(secs => $2))
                              AS claim_alive
                FROM answer_cache WHERE cache_key = $1 FOR UPDATE
                """,
                cache_key,
                CLAIM_LEASE_S,
            )
            if row is None:  # deleted between the two statements: try again later
                return ClaimResult.WAIT, None
            if row["fresh"]:
                return ClaimResult.READY, _cached(row)
            if row["owner_workflow_id"] == workflow_id and row["state"] == "pending":
                return ClaimResult.CLAIMED, None
            if row["claim_alive"]:
                return ClaimResult.WAIT, None
            await conn.execute(
                """
                UPDATE answer_cache SET state = 'pending', owner_workflow_id = $2,
                    claimed_at = now(), text = NULL, ready_at = NULL, expires_at = NULL
                WHERE cache_key = $1
                """,
                cache_key,
                workflow_id,
            )
            return ClaimResult.CLAIMED, None

    async def remember(
        self,
        cache_key: str,
        workflow_id: str,
        ttl_s: int,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        generation_ms: int,
        cost_usd: float | None,
        finish_reason: str | None = None,
    ) -> bool:
        """Store the answer `workflow_id` checkpointed (read from its chunks) under the key.

        Only the claim's owner (or anyone, when nobody holds the key) may write it;
        returns whether it was stored. Idempotent.
        """
        stored = await self._pool.fetchval(
            """
            INSERT INTO answer_cache AS a (cache_key, state, owner_workflow_id, text, model,
                prompt_tokens, completion_tokens, generation_ms, cost_usd, ready_at, expires_at,
                finish_reason)
            SELECT $1, 'ready', $2, string_agg(c.text, '' ORDER BY c.idx), $4, $5, $6, $7, $8,
                   now(), now() + make_interval(secs => $3), $9
            FROM chunks c JOIN generations g
                 ON g.workflow_id = c.workflow_id AND c.run_id = g.answer_run_id
            WHERE c.workflow_id = $2
            ON CONFLICT (cache_key) DO UPDATE SET
                state = 'ready', text = EXCLUDED.text, model = EXCLUDED.model,
                prompt_tokens = EXCLUDED.prompt_tokens,
                completion_tokens = EXCLUDED.completion_tokens,
                generation_ms = EXCLUDED.generation_ms, cost_usd = EXCLUDED.cost_usd,
                ready_at = EXCLUDED.ready_at, expires_at = EXCLUDED.expires_at,
                finish_reason = EXCLUDED.finish_reason
            WHERE a.owner_workflow_id = $2
            RETURNING true
            """,
            cache_key,
            workflow_id,
            ttl_s,
            model,
            prompt_tokens,
            completion_tokens,
            generation_ms,
            cost_usd,
            finish_reason,
        )
        return bool(stored)

    async def claim_owner(self, cache_key: str) -> str | None:
        """The chat holding a pending claim on `cache_key`, if any."""
        return await self._pool.fetchval(  # type: ignore[no-any-return]
            "SELECT owner_workflow_id FROM answer_cache WHERE cache_key = $1 AND state = 'pending'",
            cache_key,
        )

    async def release_all(self, workflow_id: str) -> int:
        """Drop every pending claim of a chat that ended without releasing them."""
        result = await self._pool.execute(
            "DELETE FROM answer_cache WHERE owner_workflow_id = $1 AND state = 'pending'",
            workflow_id,
        )
        return int(result.split()[-1])

    async def release(self, cache_key: str, workflow_id: str) -> None:
        """Drop the pending claim of a chat that will not produce the answer."""
        await self._pool.execute(
            """
            DELETE FROM answer_cache
            WHERE cache_key = $1 AND owner_workflow_id = $2 AND state = 'pending'
            """,
            cache_key,
            workflow_id,
        )

    async def totals(self) -> Totals:
        """Chats, cache hits and savings from `generations`; every generation the provider
        ran, billed tokens and cost from `llm_calls` (retries and failed attempts too)."""
        row = await self._pool.fetchrow(
            """
            WITH chats AS (
                SELECT count(*) AS generations,
                       count(*) FILTER (WHERE cache_hit) AS cache_hits,
                       coalesce(sum(saved_usd), 0) AS saved_usd,
                       coalesce(sum(saved_ms), 0) AS saved_ms
                FROM generations
            ), calls AS (
                SELECT count(*) AS llm_calls,
                       count(DISTINCT workflow_id) AS chats_with_llm_calls,
                       coalesce(sum(prompt_tokens), 0) AS prompt_tokens,
                       coalesce(sum(completion_tokens), 0) AS completion_tokens,
                       coalesce(bool_or(usage_estimated), false) AS usage_estimated,
                       sum(cost_usd) AS cost_usd,
                       count(*) FILTER (WHERE cost_usd IS NULL AND status <> 'running')
                           AS unpriced_llm_calls
                FROM llm_calls
            )
            SELECT * FROM chats, calls
            """
        )
        assert row is not None
        return Totals(**{k: _number(v) for k, v in dict(row).items()})


def _number(value: Any) -> Any:
    return float(value) if isinstance(value, Decimal) else value


def _cached(row: asyncpg.Record) -> CachedAnswer:
    return CachedAnswer(
        owner_workflow_id=row["owner_workflow_id"],
        text=row["text"] or "",
        model=row["model"],
        prompt_tokens=row["prompt_tokens"] or 0,
        completion_tokens=row["completion_tokens"] or 0,
        generation_ms=row["generation_ms"],
        cost_usd=_number(row["cost_usd"]),
        finish_reason=row["finish_reason"],
    )
