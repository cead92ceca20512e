"""Prometheus metrics (worker and gateway) and the search attributes in the Temporal UI."""

from __future__ import annotations

import httpx
from temporalio.client import Client

from common.models import ChatRequest
from testing.chats import start_chat_directly, wait_for, wait_status
from testing.oracle import unique_prompt
from testing.stack import LocalStack, free_port
from testing.workers import own_worker


async def test_worker_and_gateway_export_metrics(
    fleet: LocalStack, gateway: httpx.AsyncClient, temporal_client: Client
) -> None:
    """Chats run on a worker of their own (its own task queue), so every one of them is
    counted by that worker's metrics, whichever worker the fleet would have chosen."""
    port = free_port()
    with own_worker(fleet, {"WORKER_METRICS_PORT": str(port)}) as queue:
        chunks = 0
        for _ in range(3):
            request = ChatRequest(prompt=unique_prompt(), max_tokens=60)
            handle = await start_chat_directly(temporal_client, request, task_queue=queue)
            chunks += (await handle.result()).total_chunks

        async with httpx.AsyncClient() as client:

            async def exported() -> dict[str, float] | None:
                text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
                samples = _samples(text)
                saved = samples.get("durable_chat_chunks_saved", 0.0)
                return samples if saved >= chunks else None

            try:
                samples = await wait_for(exported, timeout_s=30, interval_s=0.5)
            except TimeoutError:
                seen = _samples((await client.get(f"http://127.0.0.1:{port}/metrics")).text)
                raise AssertionError(f"{chunks} chunks not counted: {seen}") from None
        assert samples["durable_chat_chunks_saved"] == chunks
        assert samples['durable_chat_chats_finished{outcome="completed"}'] == 3
        assert samples["durable_chat_chats_started"] == 3
        assert samples["temporal_workflow_completed"] == 3
        # the SDK's own activity metrics, per activity type
        assert samples['temporal_activity_execution_latency_count{activity_type="save_chunk"}'] == (
            chunks
        )
    started = await gateway.post("/api/workflows/start", json={"prompt": unique_prompt()})
    await wait_status(gateway, started.json()["workflow_id"], {"completed"})
    gateway_text = (await gateway.get("/metrics")).text
    assert 'durable_chat_gateway_requests_total{method="POST",route="/api/workflows/start"' in (
        gateway_text
    )
    assert "durable_chat_gateway_open_streams" in gateway_text


def _samples(text: str) -> dict[str, float]:
    """Prometheus text -> {name{labels}: value}, labels other than the telling ones dropped."""
    keep = ("outcome", "activity_type")
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        name, _, labels = series.partition("{")
        wanted = [
            pair for pair in labels.rstrip("}").split(",") if pair and pair.split("=", 1)[0] in keep
        ]
        key = f"{name}{{{','.join(wanted)}}}" if wanted else name
        samples[key] = samples.get(key, 0.0) + float(value)
    return samples


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
