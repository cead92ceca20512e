"""save_chunk and record_generation: the PostgreSQL side of a chat."""

from __future__ import annotations

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from common.models import ChunkToSave, GenerationUpdate, SavedChunk, Usage
from common.pricing import ModelPrice, estimate_cost_usd
from storage import ChatStore
from storage.chats import ChunkConflictError

log = structlog.get_logger(__name__)


class CheckpointActivities:
    """Activities that write the durable record users read, bound to one worker's pool."""

    def __init__(
        self, store: ChatStore, worker_identity: str, prices: dict[str, ModelPrice]
    ) -> None:
        self._store = store
        self._worker = worker_identity
        self._prices = prices

    @activity.defn(name="save_chunk")
    async def save_chunk(self, chunk: ChunkToSave) -> SavedChunk:
        """Checkpoint 3.i: insert chunk `index` of a chat.

        Idempotent through the (workflow_id, run_id, idx) primary key: a retry or a
        replay after a crash inserts nothing and reports `inserted=False`; the stored row
        keeps the worker and attempt that first wrote it. The chunk's `chunk` event
        (for live viewers) is written in the same transaction, so it exists exactly
        when the row does. A different text for a chunk already saved fails the chat
        (ChunkConflictError, not retried): two answers are never mixed.
        """
        info = activity.info()
        try:
            inserted = await self._store.insert_chunk(
                chunk.workflow_id,
                chunk.index,
                chunk.text,
                self._worker,
                info.attempt,
                chunk.total_chunks,
                run_id=info.workflow_run_id or "",
            )
        except ChunkConflictError as err:
            raise ApplicationError(
                str(err), type="ChunkConflictError", non_retryable=True
            ) from None
        attempt = info.attempt
        if not inserted:
            log.info("chunk already saved", index=chunk.index)
        return SavedChunk(
            index=chunk.index, worker=self._worker, attempt=attempt, inserted=inserted
        )

    @activity.defn(name="record_generation")
    async def record_generation(self, update: GenerationUpdate) -> None:
        """Upsert the chat's `generations` row (stage, totals, usage, error).

        When the update carries the LLM's token usage, the estimated cost is computed
        from the price table (`LLM_PRICES`) and stored with it. Idempotent: the same
        update applied twice leaves the same row.
        """
        cost = None
        if update.completion_tokens is not None and not update.cache_hit and update.model:
            usage = Usage(update.prompt_tokens or 0, update.completion_tokens)
            cost = estimate_cost_usd(update.model, usage, self._prices)
        await self._store.record_generation(
            update, cost, run_id=activity.info().workflow_run_id or ""
        )
