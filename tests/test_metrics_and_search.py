"""Prometheus metrics (worker and gateway) and the search attributes in the Temporal UI."""

from __future__ import annotations

import httpx
from temporalio.client import Client

from devstack.harness import LocalStack, free_port
from tests.helpers import unique_prompt, wait_for, wait_status


async def test_worker_and_gateway_export_metrics(
    fleet: LocalStack, gateway: httpx.AsyncClient
) -> None:
    port = free_port()
    worker = fleet.start_worker({"WORKER_METRICS_PORT": str(port)})
    try:
        for _ in range(4):  # some of these land on the metrics worker
            started = await gateway.post(
                "/api/workflows/start", json={"prompt": unique_prompt(), "max_tokens": 60}
            )
            await wait_status(gateway, started.json()["workflow_id"], {"completed"})

        async with httpx.AsyncClient() as client:

            async def exported() -> str | None:
                text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
                return text if "durable_chat_chunks_saved" in text else None

            text = await wait_for(exported, timeout_s=30, interval_s=0.5)
        assert "temporal_activity_execution_latency" in text or "temporal_" in text
        gateway_text = (await gateway.get("/metrics")).text
        assert 'durable_chat_gateway_requests_total{method="POST",route="/api/workflows/start"' in (
            gateway_text
        )
        assert "durable_chat_gateway_open_streams" in gateway_text
    finally:
        worker.stop()


async def test_chats_are_searchable_by_stage_and_conversation(
    gateway: httpx.AsyncClient, temporal_client: Client
) -> None:
    conversation = "conv-" + unique_prompt("s")[-9:-1]
    started = await gateway.post(
        "/api/workflows/start",
        json={"prompt": unique_prompt(), "max_tokens": 40, "conversation_id": conversation},
    )
    workflow_id = started.json()["workflow_id"]
    await wait_status(gateway, workflow_id, {"completed"})

    async def listed() -> list[str] | None:
        ids = [
            w.id
            async for w in temporal_client.list_workflows(
                f"ChatConversationId = '{conversation}' AND ChatStage = 'completed'"
            )
        ]
        return ids or None

    assert await wait_for(listed, timeout_s=20, interval_s=0.5) == [workflow_id]
    description = await temporal_client.get_workflow_handle(workflow_id).describe()
    assert "·" in (await description.static_summary() or "")  # "<first words> · <model>"
