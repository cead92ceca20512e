"""ChatStreamingWorkflow: validate, generate once, checkpoint chunk by chunk.

The workflow is the only place that decides order and progress. Its history is the
durable record of what was done: after a crash a worker replays it, skips every
activity already completed (validation, the LLM call, saved chunks) and continues
with the first chunk not yet saved.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from activities.cache import CacheActivities
    from activities.checkpoints import CheckpointActivities
    from activities.generation import GenerationActivities
    from activities.validation import validate_prompt
    from common import metrics, search_attributes
    from common.cache_key import answer_cache_key
    from common.chunking import split_into_chunks
    from common.contract import CHAT_WORKFLOW, PROGRESS_QUERY
    from common.models import (
        AnswerLookup,
        AnswerToRemember,
        CacheClaim,
        CacheOutcome,
        ChatRequest,
        ChatResult,
        ChunkToSave,
        FinishReason,
        GenerationRequest,
        GenerationUpdate,
        Progress,
        PromptToValidate,
        ShownAnswer,
        Stage,
        StopToKeep,
        Turn,
    )
    from workflows import policies


# Patch ids (workflow.patched): behaviour added while chats may be running. A chat
# started before a patch replays without it; see docs/upgrades.md.
PATCH_ANSWER_CACHE = "answer-cache-1"
PATCH_SEARCH_ATTRIBUTES = "search-attributes-1"
PATCH_VALIDATE_WHILE_RECORDING = "validate-while-recording-1"
# An answer stopped by the provider's content filter is not cached (the next identical
# request asks again), and a generation cancelled at the provider ends the chat as
# cancelled rather than failed.
PATCH_PROVIDER_ENDS = "provider-ends-1"
# Fewer round trips through the server on the way to the first token and at the end:
# the records before the LLM call and the validation run as local activities in the
# chat's first workflow task (markers in the history, shown in the Temporal UI), and the
# answer is remembered while the chat's end is recorded (docs/benchmarks.md, load).
PATCH_FAST_PATH = "fast-path-1"
# A worker that freezes can swallow one generation attempt per activity poll it holds:
# chats get that many more attempts (workflows/policies.py, GENERATE_RETRY).
PATCH_FROZEN_WORKER_RETRIES = "frozen-worker-retries-1"
# A chat stopped while its answer was being written keeps the text its viewers had seen
# (stage `stopped`): the workflow waits for the generation to end at the provider, then
# checkpoints that text. A stop during checkpointing saves the whole answer.
PATCH_STOP_KEEPS_TEXT = "stop-keeps-text-1"

# Activities whose results a resuming worker takes from the history, by stage.
_DONE_BEFORE: dict[Stage, tuple[str, ...]] = {
    Stage.GENERATING: ("validate_prompt",),
    Stage.CHECKPOINTING: ("validate_prompt", "generate_full_text"),
    Stage.COMPLETED: ("validate_prompt", "generate_full_text"),
}


@workflow.defn(name=CHAT_WORKFLOW)
class ChatStreamingWorkflow:
    def __init__(self) -> None:
        self._progress = Progress()
        self._started_in_replay = False
        self._resume_logged = False
        self._cache_claim: CacheClaim | None = None
        self._keeps_stopped_text = False
        self._saved: set[int] = set()

    @workflow.query(name=PROGRESS_QUERY)
    def progress(self) -> Progress:
        """Stage, chunks saved, total chunks and percent; answered by a live worker."""
        return self._progress

    @workflow.run
    async def run(self, request: ChatRequest) -> ChatResult:
        workflow_id = workflow.info().workflow_id
        self._started_in_replay = workflow.unsafe.is_replaying()
        workflow.metric_meter().create_counter(metrics.CHATS_STARTED).add(1)
        try:

            def validation() -> Awaitable[Any]:
                return workflow.execute_activity(
                    validate_prompt,
                    PromptToValidate(prompt=request.prompt, max_chars=request.max_prompt_chars),
                    start_to_close_timeout=policies.VALIDATE_TIMEOUT,
                    retry_policy=policies.VALIDATE_RETRY,
                    summary="validate_prompt",
                )

            first_record = _first_record(workflow_id, request)
            fast = workflow.patched(PATCH_FAST_PATH)
            if fast:
                await _all_of(
                    self._enter(Stage.VALIDATING, first_record, local=True),
                    workflow.execute_local_activity(
                        validate_prompt,
                        PromptToValidate(prompt=request.prompt, max_chars=request.max_prompt_chars),
                        start_to_close_timeout=policies.VALIDATE_TIMEOUT,
                        retry_policy=policies.VALIDATE_RETRY,
                        summary="validate_prompt",
                    ),
                )
            elif workflow.patched(PATCH_VALIDATE_WHILE_RECORDING):
                # One round trip instead of two before the LLM call (or the cache).
                await _all_of(self._enter(Stage.VALIDATING, first_record), validation())
            else:
                await self._enter(Stage.VALIDATING, first_record)
                await validation()

            messages = _messages(request)
            cache_key: str | None = None
            if request.use_cache and workflow.patched(PATCH_ANSWER_CACHE):
                cache_key = answer_cache_key(
                    messages, request.provider, request.model, request.max_tokens,
                    request.temperature,
                )  # fmt: skip
                outcome = await self._reuse_or_claim(workflow_id, cache_key, request)
                if outcome.hit:
                    return await self._complete_from_cache(workflow_id, request, outcome)
                self._cache_claim = CacheClaim(workflow_id=workflow_id, cache_key=cache_key)

            await self._enter(
                Stage.GENERATING,
                GenerationUpdate(workflow_id, Stage.GENERATING, cache_key=cache_key),
                local=fast,
            )
            generation_started = workflow.now()
            self._keeps_stopped_text = workflow.patched(PATCH_STOP_KEEPS_TEXT)
            generated = await workflow.execute_activity_method(
                GenerationActivities.generate_full_text,
                GenerationRequest(
                    workflow_id=workflow_id,
                    messages=messages,
                    model=request.model,
                    max_tokens=request.max_tokens,
                    temperature=request.temperature,
                    mode=request.generation_mode,
                ),
                start_to_close_timeout=policies.GENERATE_TIMEOUT,
                heartbeat_timeout=policies.GENERATE_HEARTBEAT_TIMEOUT,
                retry_policy=(
                    policies.GENERATE_RETRY
                    if workflow.patched(PATCH_FROZEN_WORKER_RETRIES)
                    else policies.GENERATE_RETRY_V1
                ),
                summary=f"generate_full_text ({request.model}, ≤{request.max_tokens} tokens)",
                # A stop waits until the generation has ended at the provider, so no live
                # text arrives after the text that is kept.
                cancellation_type=(
                    ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
                    if self._keeps_stopped_text
                    else ActivityCancellationType.TRY_CANCEL
                ),
            )

            if self._keeps_stopped_text and _cancel_requested():
                # The generation ended before it heard of the stop: viewers have the text
                # up to the stop (the gateway's `stopping` event), and that is kept.
                await self._end_cancelled(workflow_id, request)
                raise asyncio.CancelledError()

            generation_ms = int((workflow.now() - generation_started).total_seconds() * 1000)
            chunks = split_into_chunks(generated.text, request.chunk_target_chars)
            self._progress.total_chunks = len(chunks)
            checkpointing = GenerationUpdate(
                workflow_id,
                Stage.CHECKPOINTING,
                model=generated.model or request.model,
                total_chunks=len(chunks),
                prompt_tokens=generated.usage.prompt_tokens,
                completion_tokens=generated.usage.completion_tokens,
                finish_reason=generated.finish_reason,
                generation_mode=generated.mode,
            )
            recorded = False
            try:
                await self._enter(Stage.CHECKPOINTING, checkpointing)
                recorded = True
                await self._save_chunks(workflow_id, chunks, request.checkpoint_window)
            except (asyncio.CancelledError, ActivityError) as err:
                # A cancel reaches the chunks in flight: the first of them to end may
                # raise it, as its activity's cancellation, before the gather does.
                cancelled = isinstance(err, asyncio.CancelledError) or is_cancelled_exception(err)
                if not (self._keeps_stopped_text and cancelled):
                    raise
                # Stopped after the provider had finished: every delta was in the log
                # before checkpointing began, so the whole answer was shown and is kept.
                workflow.logger.info("stop during checkpointing: the answer is saved whole")
                if not recorded:
                    await self._enter(Stage.CHECKPOINTING, checkpointing)
                await self._save_chunks(workflow_id, chunks, request.checkpoint_window)
            if (
                cache_key is not None
                and generated.finish_reason == FinishReason.CONTENT_FILTER
                and workflow.patched(PATCH_PROVIDER_ENDS)
            ):
                await self._release_cache_claim()
                cache_key = None
            completed = GenerationUpdate(workflow_id, Stage.COMPLETED)
            if cache_key is not None:
                remembered = workflow.execute_activity_method(
                    CacheActivities.remember_answer,
                    AnswerToRemember(
                        workflow_id=workflow_id,
                        cache_key=cache_key,
                        ttl_s=request.cache_ttl_s,
                        model=generated.model or request.model,
                        usage=generated.usage,
                        generation_ms=generation_ms,
                        finish_reason=generated.finish_reason,
                    ),
                    start_to_close_timeout=policies.CACHE_WRITE_TIMEOUT,
                    retry_policy=policies.CACHE_RETRY,
                    summary="remember_answer (answer cache)",
                )
                if fast:
                    await _all_of(remembered, self._enter(Stage.COMPLETED, completed))
                else:
                    await remembered
                self._cache_claim = None
            if cache_key is None or not fast:
                await self._enter(Stage.COMPLETED, completed)
            return ChatResult(
                workflow_id=workflow_id,
                total_chunks=len(chunks),
                text_chars=len(generated.text),
                usage=generated.usage,
                model=generated.model or request.model,
                provider=request.provider,
                finish_reason=generated.finish_reason,
            )
        except asyncio.CancelledError:
            await self._end_cancelled(workflow_id, request)
            raise
        except (ActivityError, ApplicationError) as err:
            # A local activity's failure arrives as the activity's own error, not
            # wrapped in an ActivityError (the validation in PATCH_FAST_PATH).
            if is_cancelled_exception(err):
                await self._end_cancelled(workflow_id, request)
                raise
            if self._keeps_stopped_text and _cancel_requested():
                # Stopped, and the generation's worker died before it could end it: its
                # attempt timed out (the server retries no attempt of an activity whose
                # cancellation was asked). The stop still keeps what was shown.
                await self._end_cancelled(workflow_id, request)
                raise asyncio.CancelledError() from err
            message, error_type = _describe(err)
            stage = Stage.FAILED
            if error_type == "ProviderCancelledError" and workflow.patched(PATCH_PROVIDER_ENDS):
                stage = Stage.CANCELLED
            await self._finish(workflow_id, stage, message, error_type)
            raise ApplicationError(message, type=error_type, non_retryable=True) from err

    async def _end_cancelled(self, workflow_id: str, request: ChatRequest) -> None:
        """A cancel (a user's stop, an API's cancel, an operator's): during generation the
        text shown so far is kept as a `stopped` answer; otherwise, or with no text yet,
        the chat ends `cancelled`."""
        if self._keeps_stopped_text and self._progress.stage is Stage.GENERATING:
            shown: ShownAnswer = await workflow.execute_activity_method(
                GenerationActivities.collect_shown_answer,
                StopToKeep(workflow_id=workflow_id),
                start_to_close_timeout=policies.COLLECT_SHOWN_TIMEOUT,
                retry_policy=policies.RECORD_RETRY,
                summary="collect_shown_answer (stopped: keep the text shown)",
            )
            if shown.text:
                await self._keep_stopped(workflow_id, request, shown)
                return
        await self._finish(workflow_id, Stage.CANCELLED, "The chat was cancelled.")

    async def _keep_stopped(
        self, workflow_id: str, request: ChatRequest, shown: ShownAnswer
    ) -> None:
        """Checkpoint the text a stopped chat had shown, one save_chunk per chunk as for
        any answer, then end `stopped`. It is never remembered by the answer cache."""
        await self._release_cache_claim()
        chunks = split_into_chunks(shown.text, request.chunk_target_chars)
        self._progress.total_chunks = len(chunks)
        await self._enter(
            Stage.CHECKPOINTING,
            GenerationUpdate(
                workflow_id,
                Stage.CHECKPOINTING,
                model=shown.model or request.model,
                total_chunks=len(chunks),
                prompt_tokens=shown.usage.prompt_tokens,
                completion_tokens=shown.usage.completion_tokens,
            ),
        )
        await self._save_chunks(workflow_id, chunks, request.checkpoint_window)
        await self._enter(Stage.STOPPED, GenerationUpdate(workflow_id, Stage.STOPPED))

    async def _reuse_or_claim(
        self, workflow_id: str, cache_key: str, request: ChatRequest
    ) -> CacheOutcome:
        return await workflow.execute_activity_method(
            CacheActivities.claim_or_reuse_answer,
            AnswerLookup(
                workflow_id=workflow_id,
                cache_key=cache_key,
                chunk_target_chars=request.chunk_target_chars,
            ),
            start_to_close_timeout=policies.CACHE_LOOKUP_TIMEOUT,
            heartbeat_timeout=policies.CACHE_LOOKUP_HEARTBEAT_TIMEOUT,
            retry_policy=policies.CACHE_RETRY,
            summary="claim_or_reuse_answer (answer cache)",
        )

    async def _complete_from_cache(
        self, workflow_id: str, request: ChatRequest, outcome: CacheOutcome
    ) -> ChatResult:
        """A cache hit: the chunks were copied by the lookup; no LLM call was made."""
        self._progress.total_chunks = outcome.total_chunks
        self._progress.chunks_saved = outcome.total_chunks
        await self._enter(
            Stage.COMPLETED,
            GenerationUpdate(
                workflow_id,
                Stage.COMPLETED,
                model=outcome.model or request.model,
                total_chunks=outcome.total_chunks,
                prompt_tokens=outcome.usage.prompt_tokens,
                completion_tokens=outcome.usage.completion_tokens,
                cache_hit=True,
                cached_from=outcome.cached_from,
                saved_ms=outcome.saved_ms,
                saved_usd=outcome.saved_usd,
                finish_reason=outcome.finish_reason,
            ),
        )
        return ChatResult(
            workflow_id=workflow_id,
            total_chunks=outcome.total_chunks,
            text_chars=outcome.text_chars,
            usage=outcome.usage,
            model=outcome.model or request.model,
            provider=request.provider,
            cache_hit=True,
            finish_reason=outcome.finish_reason,
        )

    async def _save_chunks(self, workflow_id: str, chunks: list[str], window_size: int) -> None:
        """One save_chunk activity per chunk, at most `window_size` in flight.

        Scheduling order is ascending and the window is FIFO, so replay is
        deterministic; `chunks_saved` counts completions, so progress is exact.
        """
        window = asyncio.Semaphore(max(1, window_size))
        total = len(chunks)

        async def save(index: int, text: str) -> None:
            if index in self._saved:
                return  # saved before a stop that came during checkpointing
            async with window:
                self._log_resume_once(f"chunk {index}")
                await workflow.execute_activity_method(
                    CheckpointActivities.save_chunk,
                    ChunkToSave(
                        workflow_id=workflow_id, index=index, text=text, total_chunks=total
                    ),
                    start_to_close_timeout=policies.SAVE_CHUNK_TIMEOUT,
                    retry_policy=policies.SAVE_CHUNK_RETRY,
                    summary=f"save_chunk {index + 1}/{total}",
                )
                self._saved.add(index)
                self._progress.chunks_saved += 1
                workflow.metric_meter().create_counter(metrics.CHUNKS_SAVED).add(1)
                self._progress.percent = round(100.0 * self._progress.chunks_saved / total, 1)

        await asyncio.gather(*(save(i, text) for i, text in enumerate(chunks)))

    async def _enter(self, stage: Stage, update: GenerationUpdate, local: bool = False) -> None:
        """Move to `stage` and record it in PostgreSQL (the status fallback reads it);
        `local`: as a local activity, in this workflow task."""
        self._progress.stage = stage
        self._publish_stage(stage, cache_hit=bool(update.cache_hit))
        if stage is Stage.COMPLETED:
            self._progress.percent = 100.0
        self._log_resume_once(stage.value)
        await self._record(update, local)

    async def _finish(
        self, workflow_id: str, stage: Stage, message: str, error_type: str | None = None
    ) -> None:
        self._progress.stage = stage
        self._publish_stage(stage)
        self._progress.error = message
        await self._release_cache_claim()
        await self._record(
            GenerationUpdate(workflow_id, stage, error=message, error_type=error_type)
        )

    async def _release_cache_claim(self) -> None:
        """Let an identical chat waiting on this one generate its own answer."""
        if self._cache_claim is None:
            return
        await workflow.execute_activity_method(
            CacheActivities.release_answer_claim,
            self._cache_claim,
            start_to_close_timeout=policies.CACHE_WRITE_TIMEOUT,
            retry_policy=policies.CACHE_RETRY,
            summary="release_answer_claim (answer cache)",
        )
        self._cache_claim = None

    async def _record(self, update: GenerationUpdate, local: bool = False) -> None:
        if local:
            await workflow.execute_local_activity_method(
                CheckpointActivities.record_generation,
                update,
                start_to_close_timeout=policies.RECORD_TIMEOUT,
                retry_policy=policies.RECORD_RETRY,
                summary=f"record_generation {update.stage.value}",
            )
            return
        await workflow.execute_activity_method(
            CheckpointActivities.record_generation,
            update,
            start_to_close_timeout=policies.RECORD_TIMEOUT,
            retry_policy=policies.RECORD_RETRY,
            summary=f"record_generation {update.stage.value}",
        )

    def _publish_stage(self, stage: Stage, cache_hit: bool = False) -> None:
        """Stage as a search attribute (filterable in the Temporal UI) and, at the end,
        the outcome as a metric."""
        if workflow.patched(PATCH_SEARCH_ATTRIBUTES):
            updates: list[SearchAttributeUpdate[Any]] = [
                search_attributes.STAGE.value_set(stage.value)
            ]
            if cache_hit:
                updates.append(search_attributes.CACHE_HIT.value_set(True))
            workflow.upsert_search_attributes(updates)
        if stage.is_final:
            meter = workflow.metric_meter()
            meter.create_counter(metrics.CHATS_FINISHED).add(1, {"outcome": stage.value})
            if cache_hit:
                meter.create_counter(metrics.CACHE_HITS).add(1)

    def _log_resume_once(self, next_step: str) -> None:
        """Log, once, where a worker that replayed this chat's history picks it up."""
        if not self._started_in_replay or self._resume_logged:
            return
        if workflow.unsafe.is_replaying():
            return
        self._resume_logged = True
        workflow.metric_meter().create_counter(metrics.REPLAYS).add(1)
        skipped = _DONE_BEFORE.get(self._progress.stage, ())
        workflow.logger.info(
            "replayed history; resuming at %s (events replayed: %d, not repeated: %s, "
            "chunks already saved: %d/%d)",
            next_step,
            workflow.info().get_current_history_length(),
            ", ".join(skipped) or "nothing",
            self._progress.chunks_saved,
            self._progress.total_chunks,
        )


def _cancel_requested() -> bool:
    """Whether the chat was asked to cancel (the workflow's main task was cancelled)
    while it waited for an activity that then ended otherwise."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _all_of(*steps: Awaitable[Any]) -> None:
    """Run `steps` together and wait for every one of them, then raise the first failure
    in argument order: nothing is left running behind a failed validation, so the
    `failed` record cannot be overtaken by the first one. (After a cancellation an
    activity may still finish on its worker; `ChatStore.record_generation` never leaves
    a final stage, so a late record cannot undo `cancelled`.)"""
    outcomes = await asyncio.gather(*steps, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


def _first_record(workflow_id: str, request: ChatRequest) -> GenerationUpdate:
    return GenerationUpdate(
        workflow_id,
        Stage.VALIDATING,
        conversation_id=request.conversation_id,
        user_id=request.user_id,
        prompt=request.prompt,
        model=request.model,
        provider=request.provider,
        generation_mode=request.generation_mode.value,
        retry_of=request.retry_of,
        parent_id=request.parent_id,
        variant_of=request.variant_of,
        continues=request.continues,
    )


def _messages(request: ChatRequest) -> list[Turn]:
    messages: list[Turn] = []
    if request.system_prompt:
        messages.append(Turn(role="system", content=request.system_prompt))
    messages.extend(request.history)
    messages.append(Turn(role="user", content=request.prompt))
    return messages


def _describe(err: ActivityError | ApplicationError) -> tuple[str, str]:
    """A message for people and an error type, from a failed activity."""
    if isinstance(err, ApplicationError):
        return err.message, err.type or "ActivityFailed"
    cause = err.cause
    while isinstance(cause, ActivityError) and cause.cause is not None:
        cause = cause.cause
    if isinstance(cause, ApplicationError):
        return cause.message, cause.type or "ActivityFailed"
    if cause is not None:
        return f"{err.activity_type} failed: {cause}", type(cause).__name__
    return f"{err.activity_type} failed", "ActivityFailed"
