"""The resumable SSE stream: live deltas, checkpointed chunks, Last-Event-ID resume."""

from __future__ import annotations

import asyncpg
import httpx
from temporalio.client import Client, WorkflowExecutionStatus

from testing.chats import wait_for
from testing.oracle import expected_answer, unique_prompt
from testing.simulator import simulator_pace
from testing.sse import checkpointed_text, preview_text, read_sse


async def _start(gateway: httpx.AsyncClient, prompt: str, max_tokens: int) -> str:
    response = await gateway.post(
        "/api/workflows/start", json={"prompt": prompt, "max_tokens": max_tokens}
    )
    assert response.status_code == 202
    workflow_id: str = response.json()["workflow_id"]
    return workflow_id


async def test_stream_shows_live_preview_then_checkpointed_text(gateway) -> None:
    prompt = unique_prompt()
    workflow_id = await _start(gateway, prompt, 300)
    events = await read_sse(gateway, workflow_id)

    assert [int(e["id"]) for e in events] == list(range(1, len(events) + 1))
    stages = [e["data"]["stage"] for e in events if e["event"] == "stage"]
    assert stages == ["validating", "generating", "checkpointing", "completed"]
    assert events[-1]["event"] == "completed"
    answer = expected_answer(prompt, 300)
    first_chunk = next(i for i, e in enumerate(events) if e["event"] == "chunk")
    last_delta = max(i for i, e in enumerate(events) if e["event"] == "delta")
    assert last_delta < first_chunk  # the preview comes first, then the durable text
    assert preview_text(events) == answer
    assert checkpointed_text(events) == answer
    deltas = sum(1 for e in events if e["event"] == "delta")
    assert 1 < deltas < 300  # batched: far fewer events than tokens


async def test_resume_with_last_event_id_has_no_gap_and_no_duplicate(gateway) -> None:
    prompt = unique_prompt()
    workflow_id = await _start(gateway, prompt, 400)
    first = await read_sse(gateway, workflow_id, stop_after=5)  # then the client drops
    second = await read_sse(gateway, workflow_id, last_event_id=first[-1]["id"], stop_after=10)
    third = await read_sse(gateway, workflow_id, last_event_id=second[-1]["id"], use_query=True)
    combined = first + second + third
    assert [int(e["id"]) for e in combined] == list(range(1, len(combined) + 1))
    assert combined[-1]["event"] == "completed"
    assert preview_text(combined) == checkpointed_text(combined) == expected_answer(prompt, 400)
    # Resuming after the end returns nothing more and ends at once.
    assert await read_sse(gateway, workflow_id, last_event_id=combined[-1]["id"]) == []


async def test_resume_after_the_end_ends_while_the_workflow_is_still_closing(
    gateway, simulator, temporal_client: Client, db: asyncpg.Pool
) -> None:
    """The `completed` record and the answer-cache write run side by side, so the
    terminal event can be in the log while the run is still open. A viewer resuming
    after that event must get nothing more and an ended stream, not wait for a new run
    (only an operator's reset brings one; tests/test_operator_actions.py)."""
    async with simulator_pace(simulator, 50):  # 2 s of generation: time to take the lock
        workflow_id = await _start(gateway, unique_prompt(), 100)

        async def generating() -> bool:
            status = (await gateway.get(f"/api/workflows/{workflow_id}/status")).json()
            return bool(status["stage"] == "generating")

        await wait_for(generating, timeout_s=30, interval_s=0.1)
    async with db.acquire() as conn, conn.transaction():
        # the cache write waits for this lock; the rest of the chat does not use the table
        await conn.execute("LOCK TABLE answer_cache IN EXCLUSIVE MODE")
        events = await read_sse(gateway, workflow_id, timeout_s=60)
        assert events[-1]["event"] == "completed"
        description = await temporal_client.get_workflow_handle(workflow_id).describe()
        assert description.status == WorkflowExecutionStatus.RUNNING  # still closing
        assert (
            await read_sse(gateway, workflow_id, last_event_id=events[-1]["id"], timeout_s=15) == []
        )
    await temporal_client.get_workflow_handle(workflow_id).result()  # it closes once unlocked


async def test_malformed_last_event_id_is_refused(gateway) -> None:
    workflow_id = await _start(gateway, unique_prompt(), 20)
    for bad in ("abc", "-1", "1.5", "1e3", "1" * 30):
        response = await gateway.get(
            f"/api/workflows/{workflow_id}/events", headers={"Last-Event-ID": bad}
        )
        assert response.status_code == 422, bad
        assert "Last-Event-ID" in response.json()["detail"]


async def test_events_of_unknown_chat_is_404(gateway) -> None:
    response = await gateway.get("/api/workflows/chat-unknown/events")
    assert response.status_code == 404
