"""The UI's gateway client against the real gateway (the shared ``stack`` fixture) and
against a port where nothing listens. Reconnecting after a gateway restart mid-stream is
covered end to end in test_chat_ui.py."""

from __future__ import annotations

import uuid

import httpx
import pytest

from testing.keys import TEST_API_KEYS
from testing.oracle import unique_prompt
from testing.stack import LocalStack, free_port
from tests.browser.harness import simulated_answer, simulator_request
from ui.gateway_client import (
    ChatEvent,
    GatewayClient,
    GatewayUnavailable,
    InvalidPrompt,
    StreamInterrupted,
    WorkflowNotFound,
    follow_events,
)
from ui.live_answer import LiveAnswer


async def test_follow_events_yields_every_event_once_then_the_end(
    fleet: LocalStack, simulator: httpx.AsyncClient
) -> None:
    prompt = unique_prompt("Gateway client test")
    key = uuid.uuid4().hex
    conversation = f"conv-{uuid.uuid4().hex}"
    async with GatewayClient(fleet.gateway_url, api_key=TEST_API_KEYS["tester"]) as client:
        workflow_id = await client.start_workflow(
            prompt, conversation_id=conversation, idempotency_key=key
        )
        again = await client.start_workflow(
            prompt, conversation_id=conversation, idempotency_key=key
        )
        assert again == workflow_id  # a double submit never starts a second workflow

        items = [item async for item in follow_events(client, workflow_id)]
        # Resuming after any event gives exactly the events after it.
        middle = len(items) // 2
        tail = [item async for item in follow_events(client, workflow_id, after=middle)]

    assert all(isinstance(item, ChatEvent) for item in items)
    events = [item for item in items if isinstance(item, ChatEvent)]
    assert [event.id for event in events] == list(range(1, len(events) + 1))
    assert events[-1].type == "completed"
    assert [event.type for event in events].count("completed") == 1
    assert tail == events[middle:]

    answer = LiveAnswer()
    for event in events:
        answer.apply(event)
    expected = simulated_answer(await simulator_request(simulator, prompt))
    assert answer.preview == expected
    assert answer.checkpointed == expected
    assert answer.text == expected
    assert answer.outcome == "completed"
    assert answer.chunks_saved == answer.total_chunks
    assert answer.progress == 100.0


async def test_follow_events_gives_up_after_a_bounded_outage() -> None:
    """Nothing listens on the port (a real refused connection): bounded retries, then a
    clear error."""
    items: list[ChatEvent | StreamInterrupted] = []
    async with GatewayClient(f"http://127.0.0.1:{free_port()}", timeout_s=2) as nowhere:
        with pytest.raises(GatewayUnavailable, match="stopped retrying"):
            async for item in follow_events(
                nowhere, "chat-1", first_backoff_s=0.01, max_backoff_s=0.02, give_up_after_s=0.3
            ):
                items.append(item)
    assert items and all(isinstance(item, StreamInterrupted) for item in items)
    assert max(item.retry_in_s for item in items if isinstance(item, StreamInterrupted)) == 0.02


async def test_gateway_errors_arrive_as_typed_exceptions(fleet: LocalStack) -> None:
    async with GatewayClient(fleet.gateway_url, api_key=TEST_API_KEYS["tester"]) as client:
        with pytest.raises(InvalidPrompt, match="empty"):
            await client.start_workflow("   ")
        with pytest.raises(WorkflowNotFound):
            await client.get_status(f"chat-{uuid.uuid4()}")
        with pytest.raises(WorkflowNotFound):
            [item async for item in follow_events(client, f"chat-{uuid.uuid4()}")]
    async with GatewayClient(f"http://127.0.0.1:{free_port()}", timeout_s=2) as nowhere:
        with pytest.raises(GatewayUnavailable, match="cannot be reached"):
            await nowhere.get_status("chat-1")
