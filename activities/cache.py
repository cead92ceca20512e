"""The answer cache: reuse a ready answer, or claim the key so identical chats wait."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable

import structlog
from temporalio import activity

from common.chunking import split_into_chunks
from common.models import AnswerLookup, AnswerToRemember, CacheClaim, CacheOutcome, Usage
from common.pricing import ModelPrice, estimate_cost_usd
from storage import AnswerCacheStore, ChatStore, ClaimResult

log = structlog.get_logger(__name__)

# While another chat generates the same answer, check for it this often...
WAIT_POLL_S = 0.1
# ...and ask Temporal this often whether that chat still runs: a chat terminated by an
# operator never releases its claim itself.
OWNER_CHECK_S = 2.0

IsRunning = Callable[[str], Awaitable[bool]]


class CacheActivities:
    """`scope` (CACHE_SCOPE): `global` shares answers between users (an identical
    request of anyone is a hit); `user` keys every entry by the chat's user as well, so
    nothing one user asked is served to, or observable by, another (docs/security.md)."""

    def __init__(
        self,
        cache: AnswerCacheStore,
        chats: ChatStore,
        prices: dict[str, ModelPrice],
        is_running: IsRunning | None = None,
        scope: str = "global",
    ) -> None:
        self._cache = cache
        self._chats = chats
        self._prices = prices
        self._is_running = is_running
        self._scope = scope

    async def _key(self, cache_key: str, workflow_id: str) -> str:
        """The stored key: the workflow's key, or with `user` scope one per user (the
        chat's owner, from its record, written before any cache step)."""
        if self._scope != "user":
            return cache_key
        row = await self._chats.get_generation(workflow_id)
        user = row.user_id if row is not None else ""
        return hashlib.sha256(f"user:{user}\x00{cache_key}".encode()).hexdigest()

    @activity.defn(name="claim_or_reuse_answer")
    async def claim_or_reuse_answer(self, lookup: AnswerLookup) -> CacheOutcome:
        """A hit: copy the cached answer into this chat's chunks (with their events) and
        return what was saved. A miss: claim the key and return `hit=False`; the chat
        then calls the LLM. If an identical chat is generating right now, wait for it
        (heartbeating) and reuse its answer: one LLM call for both.

        Idempotent: a retry finds the key claimed by this chat, or the chunks already
        copied (inserts are keyed by chunk index).
        """
        waited = False
        next_owner_check = time.monotonic() + OWNER_CHECK_S
        key = await self._key(lookup.cache_key, lookup.workflow_id)
        while True:
            result, answer = await self._cache.claim_or_get(key, lookup.workflow_id)
            if result is ClaimResult.CLAIMED:
                return CacheOutcome(hit=False)
            if result is ClaimResult.READY and answer is not None:
                chunks = split_into_chunks(answer.text, lookup.chunk_target_chars)
                await self._chats.copy_answer(
                    lookup.workflow_id,
                    chunks,
                    "answer-cache",
                    run_id=activity.info().workflow_run_id or "",
                )
                log.info(
                    "answer cache hit",
                    cached_from=answer.owner_workflow_id,
                    waited_for_it=waited,
                    chunks=len(chunks),
                )
                return CacheOutcome(
                    hit=True,
                    total_chunks=len(chunks),
                    text_chars=len(answer.text),
                    usage=Usage(answer.prompt_tokens, answer.completion_tokens),
                    model=answer.model or "",
                    cached_from=answer.owner_workflow_id,
                    saved_ms=answer.generation_ms,
                    saved_usd=answer.cost_usd,
                    finish_reason=answer.finish_reason,
                )
            if not waited:
                log.info("identical chat in progress: waiting for its answer")
                waited = True
            activity.heartbeat("waiting for an identical chat")
            if time.monotonic() >= next_owner_check:
                next_owner_check = time.monotonic() + OWNER_CHECK_S
                await self._release_if_owner_gone(key)
            await asyncio.sleep(WAIT_POLL_S)

    async def _release_if_owner_gone(self, cache_key: str) -> None:
        """Free a claim whose owner no longer runs (terminated, timed out): this chat
        then claims the key and generates, instead of waiting for the claim's lease."""
        owner = await self._cache.claim_owner(cache_key)
        if owner is None or self._is_running is None or await self._is_running(owner):
            return
        log.warning("identical chat no longer runs: taking over its claim", owner=owner)
        await self._cache.release(cache_key, owner)

    @activity.defn(name="remember_answer")
    async def remember_answer(self, answer: AnswerToRemember) -> bool:
        """Store the chat's checkpointed answer under its key for `ttl_s` seconds.

        The text is read from the chat's chunks in PostgreSQL, not passed through the
        workflow history a second time. Idempotent (an upsert by key).
        """
        cost = estimate_cost_usd(answer.model, answer.usage, self._prices)
        return await self._cache.remember(
            await self._key(answer.cache_key, answer.workflow_id),
            answer.workflow_id,
            answer.ttl_s,
            answer.model,
            answer.usage.prompt_tokens,
            answer.usage.completion_tokens,
            answer.generation_ms,
            cost,
            answer.finish_reason,
        )

    @activity.defn(name="release_answer_claim")
    async def release_answer_claim(self, claim: CacheClaim) -> None:
        """Free the key of a chat that failed or was cancelled, so a waiting identical
        chat claims it and generates. Idempotent (a delete)."""
        await self._cache.release(
            await self._key(claim.cache_key, claim.workflow_id), claim.workflow_id
        )
