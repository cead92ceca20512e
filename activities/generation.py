"""generate_full_text: the one LLM call of a chat, streamed, with heartbeats."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import cast

import openai
import structlog
from openai.types.chat import ChatCompletionMessageParam
from temporalio import activity

from activities.billing import CallLedger, estimate_prompt_tokens, estimate_tokens
from activities.drafts import DraftPublisher
from activities.provider import ProviderLimits, ProviderTrouble, next_within, provider_errors
from activities.resumable import cancel_at_provider, generate_resumable, heartbeat_details
from common import metrics
from common.models import (
    FinishReason,
    GeneratedText,
    GenerationMode,
    GenerationRequest,
    ShownAnswer,
    StopToKeep,
    Usage,
)
from common.pricing import ModelPrice
from storage import ChatStore, LlmCallStore

log = structlog.get_logger(__name__)

# Well under GENERATE_HEARTBEAT_TIMEOUT (3 s): two heartbeats may be lost before the
# server declares the worker dead.
HEARTBEAT_INTERVAL_S = 1.0

# Chat-completions finish reasons kept as they are; any other (tool_calls, ...) is `stop`.
_FINISH_REASONS = {r.value for r in FinishReason}


class GenerationActivities:
    """The LLM side of a chat, bound to one OpenAI-compatible client.

    The client must be built with `max_retries=0`: Temporal owns retries, with the
    policy in `workflows.policies`. `mode` is what this worker's probe found its
    endpoint can do; it settles the chats that ask for `auto`.
    """

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        store: ChatStore,
        calls: LlmCallStore,
        prices: dict[str, ModelPrice],
        limits: ProviderLimits,
        mode: GenerationMode,
    ) -> None:
        assert mode is not GenerationMode.AUTO
        self._client = client
        self._store = store
        self._calls = calls
        self._prices = prices
        self._limits = limits
        self._mode = mode

    @activity.defn(name="generate_full_text")
    async def generate_full_text(self, request: GenerationRequest) -> GeneratedText:
        """Checkpoint 2: stream the whole answer from the provider and return it.

        Its result is recorded in the workflow history, so once it has completed the
        LLM is never called again for this chat, whatever crashes later. While tokens
        arrive it heartbeats every second, so a dead worker is noticed within the
        heartbeat timeout and the call is retried elsewhere. Streamed text is published
        as live `delta` events (see activities.drafts); a retry that cannot continue the
        same generation first publishes a `reset`, so viewers never see text twice.
        Every generation the provider runs is counted in `llm_calls` (activities.billing).

        An answer cut at `max_tokens` or stopped by a content filter is an answer (its
        `finish_reason` says which). Errors: see activities.provider.
        """
        info = activity.info()
        mode = self._mode if request.mode is GenerationMode.AUTO else request.mode
        if request.mode is GenerationMode.AUTO and info.attempt == 1:
            await _best_effort(self._store.set_generation_mode(request.workflow_id, mode.value))
        drafts = DraftPublisher(
            self._store, request.workflow_id, info.attempt, run_id=info.workflow_run_id or ""
        )
        ledger = CallLedger(
            self._calls,
            self._prices,
            request.workflow_id,
            info.attempt,
            mode.value,
            request.model,
            estimate_prompt_tokens(request.messages),
            run_id=info.workflow_run_id or "",
        )
        resumable = mode is GenerationMode.RESUME
        heartbeats = asyncio.create_task(
            _heartbeat_every(
                HEARTBEAT_INTERVAL_S,
                lambda: heartbeat_details(drafts) if resumable else drafts.chars,
                # The first heartbeat goes out unthrottled: make it carry the response
                # id, which a retry needs to re-attach.
                ready=(lambda: drafts.response_id is not None) if resumable else None,
            )
        )
        meter = activity.metric_meter()
        if info.attempt > 1:
            meter.create_counter(metrics.LLM_RETRIES).add(1, {"mode": mode.value})
        tolerance = self._limits.outage_tolerance_s
        try:
            if resumable:
                generated = await provider_errors(
                    generate_resumable(
                        self._client, self._store, request, drafts, ledger, self._limits
                    ),
                    tolerance,
                )
            else:
                if info.attempt > 1:
                    log.warning("generation retried: the provider is asked again")
                    await ledger.close_interrupted(except_key=None)
                    await drafts.restart_if_shown(
                        f"The answer restarted after a worker failure or a provider error "
                        f"(attempt {info.attempt}); this provider cannot resume a generation."
                    )
                generated = await provider_errors(self._stream(request, drafts, ledger), tolerance)
        finally:
            heartbeats.cancel()
        generated.mode = mode.value
        tokens = meter.create_counter(metrics.LLM_TOKENS)
        tokens.add(generated.usage.prompt_tokens, {"kind": "prompt"})
        tokens.add(generated.usage.completion_tokens, {"kind": "completion"})
        return generated

    @activity.defn(name="collect_shown_answer")
    async def collect_shown_answer(self, stop: StopToKeep) -> ShownAnswer:
        """What a stopped chat's viewers had seen, to keep as its answer, and its bill.

        Runs once its generation has ended: the workflow waited for the cancellation to
        complete, or for the attempt of a worker that died meanwhile to time out. Such a
        generation may still run at the provider, unseen: it is cancelled there, and its
        call is closed with tokens estimated from the text it had shown. The text after
        a `stopping` event reached no viewer and is left out (common.preview). A retry
        or a second worker reads the same text.
        """
        open_calls = await self._calls.open_calls(stop.workflow_id, except_key=None)
        for call in open_calls:
            if call.mode == GenerationMode.RESUME.value:
                await cancel_at_provider(self._client, call.call_key)
        if open_calls:
            ledger = CallLedger(self._calls, self._prices, stop.workflow_id, 0, "", "", 0)
            await ledger.close_interrupted(
                except_key=None, error="stopped while the worker running it was gone"
            )
        text, usage, model = await self._store.shown_answer(stop.workflow_id)
        log.info(
            "stopped answer collected", chars=len(text), completion_tokens=usage.completion_tokens
        )
        return ShownAnswer(text=text, usage=usage, model=model or "")

    async def _stream(
        self, request: GenerationRequest, drafts: DraftPublisher, ledger: CallLedger
    ) -> GeneratedText:
        """Restart mode: one streamed chat completion, counted as one LLM call."""
        # Attempt numbers start again in a run made by a Reset: the run makes the key unique.
        info = activity.info()
        call_key = f"{info.workflow_run_id}:attempt-{info.attempt}"
        parts: list[str] = []
        usage: Usage | None = None
        finish_reason: str | None = None
        model = request.model
        stream = await self._client.chat.completions.create(
            model=request.model,
            messages=[_message(t.role, t.content) for t in request.messages],
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            stream=True,
            stream_options={"include_usage": True},
        )
        await ledger.begin(call_key)
        idle_s = self._limits.idle_timeout_s
        try:
            async with stream:
                events = aiter(stream)
                while True:
                    try:
                        event = await next_within(events, idle_s)
                    except StopAsyncIteration:
                        break
                    except TimeoutError:
                        raise ProviderTrouble(
                            f"No token from the LLM provider for {idle_s:g} s "
                            "(LLM_STREAM_IDLE_TIMEOUT_S); the answer is asked again."
                        ) from None
                    model = event.model or model
                    if event.usage is not None:
                        usage = Usage(event.usage.prompt_tokens, event.usage.completion_tokens)
                    for choice in event.choices:
                        if choice.delta.content:
                            parts.append(choice.delta.content)
                            await drafts.add(choice.delta.content)
                        if choice.finish_reason:
                            finish_reason = choice.finish_reason
            if finish_reason is None:
                raise ProviderTrouble("The LLM provider's stream ended before the answer did.")
        except BaseException as err:
            status = "cancelled" if isinstance(err, asyncio.CancelledError) else "failed"
            await asyncio.shield(
                ledger.finish(
                    call_key,
                    status,
                    usage=usage,
                    chars=sum(map(len, parts)),
                    model=model,
                    error=None if status == "cancelled" else str(err) or type(err).__name__,
                )
            )
            raise
        await drafts.flush()
        text = "".join(parts)
        if usage is None:  # some OpenAI-compatible servers send no usage: estimate it
            usage = Usage(ledger.prompt_estimate, estimate_tokens(len(text)), estimated=True)
        if finish_reason not in _FINISH_REASONS:
            finish_reason = FinishReason.STOP.value
        await ledger.finish(
            call_key,
            "completed" if finish_reason == "stop" else "incomplete",
            usage=usage,
            chars=len(text),
            model=model,
            finish_reason=finish_reason,
        )
        log.info(
            "generation ended",
            chars=len(text),
            finish_reason=finish_reason,
            completion_tokens=usage.completion_tokens,
            usage_estimated=usage.estimated,
        )
        return GeneratedText(text=text, usage=usage, model=model, finish_reason=finish_reason)


async def _heartbeat_every(
    interval_s: float,
    progress: Callable[[], object],
    ready: Callable[[], bool] | None = None,
    max_wait_s: float = 1.5,
) -> None:
    """Heartbeat on a clock, not per token: a provider slow to send its first token
    must not look like a dead worker. Cancellation requests arrive through these.
    With `ready`, the first heartbeat waits (up to `max_wait_s`) until it is true."""
    waited = 0.0
    while ready is not None and not ready() and waited < max_wait_s:
        await asyncio.sleep(0.02)
        waited += 0.02
    while True:
        activity.heartbeat(progress())
        await asyncio.sleep(interval_s)


async def _best_effort(write: Awaitable[None]) -> None:
    try:
        await write
    except Exception as err:  # the row is informative only; the generation goes on
        log.warning("could not record the generation mode", error=str(err))


def _message(role: str, content: str) -> ChatCompletionMessageParam:
    return cast(ChatCompletionMessageParam, {"role": role, "content": content})
