"""Chats shaped for a measurement: answers of a given number of chunks, and the request
the gateway built for a chat (to start the same one directly through Temporal)."""

from __future__ import annotations

from typing import Any

from common.chunking import split_into_chunks
from testing.oracle import (
    GATEWAY_MODEL,
    GATEWAY_TEMPERATURE,
    SimulatedReply,
    expected_answer,
    prompt_with_natural_length,
)


def long_prompt(label: str, at_least_tokens: int) -> tuple[str, SimulatedReply]:
    """A unique prompt whose natural answer, asked as the gateway asks (its model and
    temperature), has at least `at_least_tokens` tokens: the simulator ends answers
    naturally, so an answer cut below that length is exactly as long as asked."""
    return prompt_with_natural_length(
        label, GATEWAY_MODEL, at_least=at_least_tokens, temperature=GATEWAY_TEMPERATURE
    )


def max_tokens_for_chunks(prompt: str, chunks: int, target_chars: int) -> tuple[int, int]:
    """A `max_tokens` whose simulated answer splits into exactly `chunks` chunks of
    `target_chars` (or as close as a search nearby finds); returns (max_tokens, chunks)."""
    estimate = max(1, round(chunks * target_chars / 6.6))  # the simulator: ~6.6 chars/token
    best = (estimate, -1)
    for delta in range(0, max(60, estimate // 2)):
        for candidate in {estimate - delta, estimate + delta}:
            if candidate < 1:
                continue
            answer = expected_answer(prompt, candidate, GATEWAY_TEMPERATURE, GATEWAY_MODEL)
            got = len(split_into_chunks(answer, target_chars))
            if got == chunks:
                return candidate, got
            if best[1] < 0 or abs(got - chunks) < abs(best[1] - chunks):
                best = (candidate, got)
    return best


async def chat_request_of(client: Any, workflow_id: str) -> Any:
    """The `ChatRequest` a chat was started with (its workflow input, from the history):
    what the gateway builds, with every field it sets."""
    from common.models import ChatRequest

    handle = client.get_workflow_handle(workflow_id)
    async for event in handle.fetch_history_events():
        payloads = event.workflow_execution_started_event_attributes.input.payloads
        values = await client.data_converter.decode(payloads, [ChatRequest])
        return values[0]
    raise LookupError(f"no history for {workflow_id}")
