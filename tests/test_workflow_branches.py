"""Every branch of ChatStreamingWorkflow, fast: the real workflow code on a local Temporal
dev server (the installed `temporal` CLI), with stand-in activities registered under the
activities' own names. Each test takes a fraction of a second; the real-stack tests
(tests/test_chat_flow.py, tests/test_operator_actions.py, …) run the real activities.

What the stand-ins do is set per chat through `Script`; what the workflow asked of them
is in `Calls`. The patches' old branches run in tests/test_replay.py, which replays
histories recorded before each patch (a new run always takes the patched branch).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from common import search_attributes
from common.chunking import split_into_chunks
from common.models import (
    AnswerLookup,
    AnswerToRemember,
    CacheClaim,
    CacheOutcome,
    ChatRequest,
    ChatResult,
    ChunkToSave,
    FinishReason,
    GeneratedText,
    GenerationRequest,
    GenerationUpdate,
    PromptToValidate,
    SavedChunk,
    ShownAnswer,
    Stage,
    StopToKeep,
    Usage,
    ValidatedPrompt,
)
from devstack.stack import temporal_cli
from testing.chats import wait_for
from workflows.chat import ChatStreamingWorkflow

ANSWER = "First sentence of the answer. " * 6 + "The end."


@dataclass
class Script:
    """What the stand-in activities do for one chat."""

    invalid: bool = False
    cache_hit: bool = False
    generate_error: str | None = None  # an ApplicationError type, non-retryable
    generate_blocks: bool = False  # until cancelled
    finish_reason: str = FinishReason.STOP
    slow_chunks_from: int | None = None  # save_chunk waits (until cancelled) from here, once
    shown: str = ""  # the live preview a stop keeps


@dataclass
class Calls:
    stages: list[str] = field(default_factory=list)
    errors: list[str | None] = field(default_factory=list)
    generated: int = 0
    chunks: list[int] = field(default_factory=list)
    slowed: set[int] = field(default_factory=set)
    collected: int = 0
    remembered: int = 0
    released: int = 0
    claimed: int = 0
    generating: asyncio.Event = field(default_factory=asyncio.Event)
    checkpointing: asyncio.Event = field(default_factory=asyncio.Event)


class StandIns:
    def __init__(self) -> None:
        self.scripts: dict[str, Script] = {}
        self.calls: dict[str, Calls] = {}

    def _of(self, workflow_id: str) -> tuple[Script, Calls]:
        return self.scripts[workflow_id], self.calls[workflow_id]

    @activity.defn(name="validate_prompt")
    async def validate_prompt(self, request: PromptToValidate) -> ValidatedPrompt:
        script, _ = self._of(activity.info().workflow_id or "")
        if script.invalid:
            raise ApplicationError(
                "The prompt is empty.", type="InvalidPromptError", non_retryable=True
            )
        return ValidatedPrompt(prompt_chars=len(request.prompt))

    @activity.defn(name="record_generation")
    async def record_generation(self, update: GenerationUpdate) -> None:
        _, calls = self._of(update.workflow_id)
        calls.stages.append(update.stage.value)
        calls.errors.append(update.error_type)

    @activity.defn(name="claim_or_reuse_answer")
    async def claim_or_reuse_answer(self, lookup: AnswerLookup) -> CacheOutcome:
        script, calls = self._of(lookup.workflow_id)
        calls.claimed += 1
        if script.cache_hit:
            chunks = split_into_chunks(ANSWER, lookup.chunk_target_chars)
            return CacheOutcome(
                hit=True, total_chunks=len(chunks), text_chars=len(ANSWER), cached_from="chat-x"
            )
        return CacheOutcome(hit=False)

    @activity.defn(name="generate_full_text")
    async def generate_full_text(self, request: GenerationRequest) -> GeneratedText:
        script, calls = self._of(request.workflow_id)
        calls.generated += 1
        calls.generating.set()
        if script.generate_error:
            raise ApplicationError(
                "provider said no", type=script.generate_error, non_retryable=True
            )
        while script.generate_blocks:  # cancellation arrives with a heartbeat's answer
            activity.heartbeat()
            await asyncio.sleep(0.05)
        return GeneratedText(
            text=ANSWER, usage=Usage(10, 40), model="stand-in", finish_reason=script.finish_reason
        )

    @activity.defn(name="save_chunk")
    async def save_chunk(self, chunk: ChunkToSave) -> SavedChunk:
        script, calls = self._of(chunk.workflow_id)
        slow = script.slow_chunks_from is not None and chunk.index >= script.slow_chunks_from
        if slow and chunk.index not in calls.slowed:
            calls.slowed.add(chunk.index)
            calls.checkpointing.set()
            await asyncio.sleep(3600)  # until the chat is cancelled
        calls.chunks.append(chunk.index)
        return SavedChunk(index=chunk.index, worker="stand-in", attempt=1, inserted=True)

    @activity.defn(name="collect_shown_answer")
    async def collect_shown_answer(self, stop: StopToKeep) -> ShownAnswer:
        script, calls = self._of(stop.workflow_id)
        calls.collected += 1
        return ShownAnswer(text=script.shown, usage=Usage(10, 5, estimated=True), model="m")

    @activity.defn(name="remember_answer")
    async def remember_answer(self, answer: AnswerToRemember) -> bool:
        self._of(answer.workflow_id)[1].remembered += 1
        return True

    @activity.defn(name="release_answer_claim")
    async def release_answer_claim(self, claim: CacheClaim) -> None:
        self._of(claim.workflow_id)[1].released += 1


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    environment = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        search_attributes=[search_attributes.STAGE, search_attributes.CACHE_HIT],
    )
    try:
        yield environment
    finally:
        await environment.shutdown()


@pytest.fixture(scope="module")
async def stand_ins(env: WorkflowEnvironment) -> AsyncIterator[tuple[Client, StandIns, str]]:
    fakes = StandIns()
    queue = f"branches-{uuid.uuid4().hex[:8]}"
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[ChatStreamingWorkflow],
        activities=[
            fakes.validate_prompt,
            fakes.record_generation,
            fakes.claim_or_reuse_answer,
            fakes.generate_full_text,
            fakes.save_chunk,
            fakes.collect_shown_answer,
            fakes.remember_answer,
            fakes.release_answer_claim,
        ],
    ):
        yield env.client, fakes, queue


async def _start(
    stand_ins: tuple[Client, StandIns, str], script: Script, *, use_cache: bool = True
) -> tuple[WorkflowHandle[Any, ChatResult], Calls]:
    client, fakes, queue = stand_ins
    workflow_id = f"chat-branch-{uuid.uuid4()}"
    fakes.scripts[workflow_id] = script
    calls = fakes.calls[workflow_id] = Calls()
    request = ChatRequest(prompt="Tell me", use_cache=use_cache, chunk_target_chars=40)
    handle = await client.start_workflow(
        ChatStreamingWorkflow.run, request, id=workflow_id, task_queue=queue
    )
    return handle, calls


async def _failure(handle: WorkflowHandle[Any, ChatResult]) -> BaseException:
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    assert failed.value.cause is not None
    return failed.value.cause


async def test_an_answer_is_generated_checkpointed_and_remembered(stand_ins: Any) -> None:
    handle, calls = await _start(stand_ins, Script())
    result = await handle.result()
    total = len(split_into_chunks(ANSWER, 40))
    assert result.total_chunks == total and result.finish_reason == FinishReason.STOP
    assert calls.stages == ["validating", "generating", "checkpointing", "completed"]
    assert sorted(calls.chunks) == list(range(total))
    assert (calls.generated, calls.remembered, calls.released) == (1, 1, 0)


async def test_an_invalid_prompt_fails_before_the_llm_and_the_cache(stand_ins: Any) -> None:
    handle, calls = await _start(stand_ins, Script(invalid=True))
    cause = await _failure(handle)
    assert isinstance(cause, ApplicationError) and cause.type == "InvalidPromptError"
    assert calls.stages == ["validating", "failed"] and calls.errors[-1] == "InvalidPromptError"
    assert (calls.claimed, calls.generated, calls.released) == (0, 0, 0)


async def test_a_cache_hit_completes_without_the_llm(stand_ins: Any) -> None:
    handle, calls = await _start(stand_ins, Script(cache_hit=True))
    result = await handle.result()
    assert result.cache_hit is True
    assert calls.stages == ["validating", "completed"]
    assert (calls.generated, calls.remembered, calls.chunks) == (0, 0, [])


async def test_without_the_cache_nothing_is_claimed_or_remembered(stand_ins: Any) -> None:
    handle, calls = await _start(stand_ins, Script(), use_cache=False)
    await handle.result()
    assert (calls.claimed, calls.remembered, calls.released) == (0, 0, 0)


async def test_a_provider_failure_fails_the_chat_and_releases_the_claim(stand_ins: Any) -> None:
    handle, calls = await _start(stand_ins, Script(generate_error="ProviderRejectedError"))
    cause = await _failure(handle)
    assert isinstance(cause, ApplicationError) and cause.type == "ProviderRejectedError"
    assert calls.stages[-1] == "failed" and calls.errors[-1] == "ProviderRejectedError"
    assert (calls.released, calls.remembered) == (1, 0)


async def test_a_generation_cancelled_at_the_provider_ends_as_cancelled(stand_ins: Any) -> None:
    handle, calls = await _start(stand_ins, Script(generate_error="ProviderCancelledError"))
    await _failure(handle)
    assert calls.stages[-1] == "cancelled" and calls.released == 1


async def test_a_content_filtered_answer_is_kept_but_not_cached(stand_ins: Any) -> None:
    handle, calls = await _start(stand_ins, Script(finish_reason=FinishReason.CONTENT_FILTER))
    result = await handle.result()
    assert result.finish_reason == FinishReason.CONTENT_FILTER
    assert calls.stages[-1] == "completed"
    assert (calls.remembered, calls.released) == (0, 1)


async def test_cancel_during_generation(stand_ins: Any) -> None:
    handle, calls = await _start(stand_ins, Script(generate_blocks=True))
    await asyncio.wait_for(calls.generating.wait(), timeout=10)
    await handle.cancel()
    cause = await _failure(handle)
    assert isinstance(cause, CancelledError)
    assert calls.stages == ["validating", "generating", "cancelled"]  # nothing was shown
    assert (calls.released, calls.chunks, calls.collected) == (1, [], 1)


async def test_a_stop_during_generation_keeps_the_text_shown(stand_ins: Any) -> None:
    shown = "The first words of an answer, as they were shown when Stop was pressed."
    handle, calls = await _start(stand_ins, Script(generate_blocks=True, shown=shown))
    await asyncio.wait_for(calls.generating.wait(), timeout=10)
    await handle.cancel()
    assert isinstance(await _failure(handle), CancelledError)  # Canceled in Temporal
    assert calls.stages == ["validating", "generating", "checkpointing", "stopped"]
    assert sorted(calls.chunks) == list(range(len(split_into_chunks(shown, 40))))
    assert (calls.released, calls.remembered) == (1, 0)  # never cached


async def test_a_stop_during_checkpointing_saves_the_whole_answer(stand_ins: Any) -> None:
    handle, calls = await _start(stand_ins, Script(slow_chunks_from=2))
    await asyncio.wait_for(calls.checkpointing.wait(), timeout=10)
    await handle.cancel()
    result = await handle.result()  # the answer had been generated: it is kept whole
    assert result.total_chunks == len(split_into_chunks(ANSWER, 40))
    assert calls.stages[-1] == "completed" and calls.collected == 0
    assert sorted(set(calls.chunks)) == list(range(result.total_chunks))
    assert calls.remembered == 1


async def test_progress_is_answered_while_checkpointing(stand_ins: Any) -> None:
    handle, calls = await _start(stand_ins, Script(slow_chunks_from=2))
    await asyncio.wait_for(calls.checkpointing.wait(), timeout=10)

    async def both_fast_chunks_counted() -> Any:
        # a chunk's completion reaches the workflow a workflow task after the activity
        progress = await handle.query(ChatStreamingWorkflow.progress)
        return progress if progress.chunks_saved >= 2 else None

    progress = await wait_for(both_fast_chunks_counted, timeout_s=10, interval_s=0.05)
    assert progress.stage is Stage.CHECKPOINTING
    assert progress.chunks_saved == 2 and progress.total_chunks == len(
        split_into_chunks(ANSWER, 40)
    )
    await handle.cancel()
    await handle.result()
