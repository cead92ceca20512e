"""The UI's gateway client against the real gateway (the shared ``stack`` fixture)."""

from __future__ import annotations

import uuid

import httpx
import pytest

from devstack.harness import LocalStack, free_port
from tests.browser.harness import simulated_answer, simulator_request
from tests.helpers import unique_prompt
from ui.gateway_client import (
    GatewayClient,
    GatewayUnavailable,
    InvalidPrompt,
    WorkflowNotFound,
    follow_workflow,
)


async def test_follow_workflow_yields_every_chunk_once_then_the_end(
    fleet: LocalStack, simulator: httpx.AsyncClient
) -> None:
    prompt = unique_prompt("Gateway client test")
    key = uuid.uuid4().hex
    conversation = f"conv-{uuid.uuid4().hex}"
    async with GatewayClient(fleet.gateway_url) as client:
        workflow_id = await client.start_workflow(
            prompt, conversation_id=conversation, idempotency_key=key
        )
        again = await client.start_workflow(
            prompt, conversation_id=conversation, idempotency_key=key
        )
        assert again == workflow_id  # a double submit never starts a second workflow

        updates = [u async for u in follow_workflow(client, workflow_id, interval_s=0.05)]

    chunks = [chunk for update in updates for chunk in update.new_chunks]
    assert [chunk.id for chunk in chunks] == list(range(len(chunks)))
    answer = simulated_answer(await simulator_request(simulator, prompt))
    assert "".join(chunk.text for chunk in chunks) == answer
    assert updates[-1].status.status == "completed"
    assert all(not update.status.is_terminal for update in updates[:-1])
    assert all(update.problem is None for update in updates)


async def test_gateway_errors_arrive_as_typed_exceptions(fleet: LocalStack) -> None:
    async with GatewayClient(fleet.gateway_url) as client:
        with pytest.raises(InvalidPrompt, match="empty"):
            await client.start_workflow("   ")
        with pytest.raises(WorkflowNotFound):
            await client.get_status(f"chat-{uuid.uuid4()}")
    async with GatewayClient(f"http://127.0.0.1:{free_port()}", timeout_s=2) as nowhere:
        with pytest.raises(GatewayUnavailable, match="cannot be reached"):
            await nowhere.get_status("chat-1")
