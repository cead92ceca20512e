"""The durable core end to end: gateway -> Temporal -> workers -> PostgreSQL."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from temporalio.client import Client, WorkflowFailureError

from common.models import ChatRequest
from testing.chats import (
    chunk_rows,
    generations_for,
    read_all_chunks,
    start_chat_directly,
    wait_status,
)
from testing.oracle import (
    GATEWAY_MODEL,
    GATEWAY_TEMPERATURE,
    expected_answer,
    expected_reply,
    prompt_ending,
    prompt_with_natural_length,
    unique_prompt,
)
from testing.simulator import simulator_pace


async def test_full_flow_start_to_completed(gateway, simulator, db) -> None:
    # ends by itself (stop) before 600 tokens, after several chunks
    prompt, _ = prompt_with_natural_length(
        "Write an essay about durable execution", GATEWAY_MODEL, at_least=250, at_most=590,
        temperature=GATEWAY_TEMPERATURE,
    )  # fmt: skip
    response = await gateway.post(
        "/api/workflows/start", json={"prompt": prompt, "max_tokens": 600}
    )
    assert response.status_code == 202, response.text
    workflow_id = response.json()["workflow_id"]
    assert workflow_id.startswith("chat-")

    status = await wait_status(gateway, workflow_id, {"completed"})
    assert status["stage"] == "completed"
    assert status["progress"] == 100
    assert status["chunks_saved"] == status["total_chunks"] > 1
    reply = expected_reply(prompt, 600)
    assert status["usage"]["completion_tokens"] == reply.natural_tokens < 600
    assert status["finish_reason"] == "stop" and status["notice"] is None
    assert status["llm_calls"] == 1 and status["billed_usage"] == status["usage"]

    chunks = await read_all_chunks(gateway, workflow_id)
    assert [c["id"] for c in chunks] == list(range(status["total_chunks"]))
    assert "".join(c["text"] for c in chunks) == expected_answer(prompt, 600)
    assert all(c["worker"].startswith("worker-") and c["attempt"] >= 1 for c in chunks)
    assert await generations_for(simulator, prompt) == {"started": 1, "completed": 1}
    assert len(await chunk_rows(db, workflow_id)) == status["total_chunks"]


async def test_chunks_cursor_pages(gateway) -> None:
    prompt = prompt_ending("length", 600)  # ~4,000 characters: 8 chunks or so
    workflow_id = (
        await gateway.post("/api/workflows/start", json={"prompt": prompt, "max_tokens": 600})
    ).json()["workflow_id"]
    await wait_status(gateway, workflow_id, {"completed"})
    page = (await gateway.get(f"/api/workflows/{workflow_id}/chunks?from_id=2&limit=2")).json()
    assert [c["id"] for c in page["chunks"]] == [2, 3]
    assert page["next_from_id"] == 4
    assert page["status"] == "completed"
    end = (await gateway.get(f"/api/workflows/{workflow_id}/chunks?from_id=10000")).json()
    assert end["chunks"] == [] and end["next_from_id"] == 10000


async def test_idempotency_key_starts_one_workflow(gateway, simulator) -> None:
    prompt = unique_prompt()
    body = {"prompt": prompt, "max_tokens": 60, "idempotency_key": uuid.uuid4().hex}
    first = (await gateway.post("/api/workflows/start", json=body)).json()["workflow_id"]
    second = (await gateway.post("/api/workflows/start", json=body)).json()["workflow_id"]
    assert first == second
    await wait_status(gateway, first, {"completed"})
    third = (await gateway.post("/api/workflows/start", json=body)).json()["workflow_id"]
    assert third == first  # a finished chat is not started again either
    assert (await generations_for(simulator, prompt))["started"] == 1


def activities_asked(history: Any) -> list[tuple[str, int]]:
    """(activity type, attempt) of every activity the chat ran: regular ones from their
    started events, local ones from their markers."""
    scheduled: dict[int, str] = {}
    asked: list[tuple[str, int]] = []
    for e in history.events:
        if e.HasField("activity_task_scheduled_event_attributes"):
            scheduled[e.event_id] = e.activity_task_scheduled_event_attributes.activity_type.name
        elif e.HasField("activity_task_started_event_attributes"):
            attrs = e.activity_task_started_event_attributes
            asked.append((scheduled[attrs.scheduled_event_id], attrs.attempt))
        elif e.HasField("marker_recorded_event_attributes"):
            marker = e.marker_recorded_event_attributes
            if marker.marker_name == "core_local_activity":
                data = json.loads(marker.details["data"].payloads[0].data)
                asked.append((data["activity_type"], data["attempt"]))
    return asked


async def test_invalid_prompt_fails_fast_without_llm_call(
    temporal_client: Client, simulator, db
) -> None:
    prompt = "   \x07   "
    handle = await start_chat_directly(temporal_client, ChatRequest(prompt=prompt))
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    assert "control character" in str(failure.value.cause)

    history = await handle.fetch_history()
    asked = activities_asked(history)  # scheduled, and local ones (markers)
    assert [name for name, _ in asked].count("validate_prompt") == 1
    assert "generate_full_text" not in [name for name, _ in asked]
    assert all(attempt == 1 for _, attempt in asked)  # no retries
    assert (await generations_for(simulator, prompt))["started"] == 0
    row = await db.fetchrow(
        "SELECT stage, error FROM generations WHERE workflow_id = $1", handle.id
    )
    assert row["stage"] == "failed" and "control character" in row["error"]


async def test_cancel_keeps_saved_chunks(gateway, simulator, db) -> None:
    prompt = unique_prompt()
    async with simulator_pace(simulator, 100):  # seconds of generation: time to cancel it
        workflow_id = (
            await gateway.post("/api/workflows/start", json={"prompt": prompt, "max_tokens": 1000})
        ).json()["workflow_id"]
        await wait_status(gateway, workflow_id, {"running"})
        response = await gateway.post(f"/api/workflows/{workflow_id}/cancel")
        assert response.status_code == 202
        # before any text it is a cancellation, after some a stop (tests/test_stop.py)
        status = await wait_status(gateway, workflow_id, {"cancelled", "stopped"})
        assert status["stage"] == status["status"]
        again = await gateway.post(f"/api/workflows/{workflow_id}/cancel")
        assert again.json()["status"] == status["status"]


async def test_status_from_postgres_when_every_worker_is_down(fleet, gateway) -> None:
    prompt = unique_prompt()
    workflow_id = (
        await gateway.post("/api/workflows/start", json={"prompt": prompt, "max_tokens": 3000})
    ).json()["workflow_id"]
    live = await wait_status(gateway, workflow_id, {"running"})
    assert live["source"] in ("workflow", "temporal", "postgres")

    for worker in fleet.live_workers():
        worker.kill()
    response = await gateway.get(f"/api/workflows/{workflow_id}/status", timeout=10)
    body = response.json()
    assert response.status_code == 200
    assert body["source"] == "postgres"
    assert body["status"] == "running"

    fleet.start_worker()  # the chat finishes once a worker is back
    done = await wait_status(gateway, workflow_id, {"completed"}, timeout_s=90)
    assert done["progress"] == 100


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "expected"),
    [
        ("post", "/api/workflows/start", {"content": b"{not json"}, 422),
        ("post", "/api/workflows/start", {"json": {"prompt": 42}}, 422),
        ("post", "/api/workflows/start", {"json": {}}, 422),
        ("post", "/api/workflows/start", {"json": {"prompt": "hi", "bogus": 1}}, 422),
        ("post", "/api/workflows/start", {"json": {"prompt": ""}}, 422),
        ("post", "/api/workflows/start", {"json": {"prompt": "a\x00b"}}, 422),
        ("post", "/api/workflows/start", {"json": {"prompt": "x" * 40_000}}, 413),
        ("post", "/api/workflows/start", {"json": {"prompt": "hi", "max_tokens": 10**6}}, 413),
        ("post", "/api/workflows/start", {"json": {"prompt": "hi", "temperature": 9}}, 422),
        ("get", "/api/workflows/chat-does-not-exist/status", {}, 404),
        ("get", "/api/workflows/chat-does-not-exist/chunks", {}, 404),
        ("post", "/api/workflows/chat-does-not-exist/cancel", {}, 404),
        ("get", "/api/workflows/chat-x/chunks?from_id=-1", {}, 422),
        ("get", "/api/workflows/bad%20id/status", {}, 422),
    ],
)
async def test_gateway_input_errors(
    gateway: httpx.AsyncClient, method, path, kwargs, expected
) -> None:
    response = await gateway.request(method.upper(), path, **kwargs)
    assert response.status_code == expected, response.text
    detail = response.json()["detail"]
    assert detail  # a message, never an empty body
    if (
        expected == 422
        and "prompt" in kwargs.get("json", {})
        and isinstance(kwargs["json"]["prompt"], str)
        and kwargs["json"]["prompt"] != ""
        and len(kwargs["json"]) == 1
    ):
        assert isinstance(detail, str) and "prompt" in detail.lower()


async def test_health_and_readiness(gateway) -> None:
    assert (await gateway.get("/healthz")).json() == {"status": "ok", "checks": {}}
    ready = (await gateway.get("/readyz")).json()
    assert ready["checks"] == {"temporal": "ok", "postgres": "ok"}
