"""Stop keeps what was written (issue 18): a chat stopped mid-answer keeps the text its
viewers had seen, as durable chunks, marked `stopped`, billed, never cached, and part of
the conversation's next turn. Real stack: gateway, workers, Temporal, PostgreSQL and the
simulator."""

from __future__ import annotations

import asyncio
import contextlib

from temporalio.client import Client

from common.models import ChatRequest
from testing.chats import generations_for, read_all_chunks, start_chat, wait_for, wait_status
from testing.oracle import prompt_ending
from testing.simulator import simulator_fault, simulator_pace
from testing.sse import preview_text, stream_events
from testing.stack import LocalStack
from testing.workers import worker_process
from tests.helpers import keep_history


async def _kept(gateway, workflow_id: str) -> str:  # type: ignore[no-untyped-def]
    """The chat's durable answer, read by chunk cursor."""
    return "".join(chunk["text"] for chunk in await read_all_chunks(gateway, workflow_id))


async def _stop_after_text(gateway, workflow_id: str, min_chars: int = 40):  # type: ignore[no-untyped-def]
    """Follow the chat's stream; once `min_chars` of preview were shown, stop it; read on
    to the terminal event. Returns (every event, the preview shown when Stop was sent)."""
    events: list[dict] = []  # type: ignore[type-arg]
    shown_at_stop: str | None = None
    stream = stream_events(gateway, workflow_id)
    async with asyncio.timeout(120), contextlib.aclosing(stream) as received:
        async for event in received:
            events.append(event.as_dict())
            if shown_at_stop is None and len(preview_text(events)) >= min_chars:
                shown_at_stop = preview_text(events)
                response = await gateway.post(f"/api/workflows/{workflow_id}/cancel")
                assert response.status_code == 202, response.text
                assert response.json()["status"] == "cancelling"
            if event.event in ("completed", "stopped", "cancelled", "failed"):
                break
    assert shown_at_stop is not None, events[-5:]
    return events, shown_at_stop


async def test_a_stopped_answer_keeps_the_text_shown(gateway, simulator, db) -> None:
    max_tokens = 800
    prompt = prompt_ending("length", max_tokens, "A long answer someone stops")
    async with simulator_pace(simulator, 60):  # 13 s of generation
        workflow_id = await start_chat(gateway, prompt=prompt, max_tokens=max_tokens, cache=True)
        events, shown_at_stop = await _stop_after_text(gateway, workflow_id)

    assert events[-1]["event"] == "stopped", events[-3:]
    kinds = [e["event"] for e in events]
    assert "stopping" in kinds
    kept = await _kept(gateway, workflow_id)
    # exactly the preview of every viewer: what it showed at the stop, and what the
    # deltas already on their way before the stop marker added (none after it)
    assert kept == preview_text(events)
    assert kept.startswith(shown_at_stop) and len(kept) < len(shown_at_stop) + 400
    status = (await gateway.get(f"/api/workflows/{workflow_id}/status")).json()
    assert status["status"] == "stopped" and status["stage"] == "stopped", status
    assert status["chunks_saved"] == status["total_chunks"] > 0
    assert status["notice"].startswith("Stopped")
    assert status["billed_usage"]["completion_tokens"] > 0
    assert status["cost_usd"] is not None and status["cost_usd"] > 0
    counts = await generations_for(simulator, prompt)
    assert counts["completed"] == 0  # ended at the provider, not run to its end

    # never cached as a complete answer: the same prompt asks the provider again
    again = await start_chat(gateway, prompt=prompt, max_tokens=max_tokens, cache=True)
    finished = await wait_status(gateway, again, {"completed"}, timeout_s=60)
    assert finished["cache_hit"] is False
    assert (await generations_for(simulator, prompt))["started"] == 2

    row = await db.fetchrow("SELECT status FROM generations WHERE workflow_id = $1", workflow_id)
    assert row["status"] == "stopped"


async def test_the_next_turn_sees_the_stopped_answer(
    gateway, simulator, temporal_client: Client
) -> None:
    conversation = f"conv-stop-{id(gateway)}"
    max_tokens = 800
    prompt = prompt_ending("length", max_tokens, "An answer stopped in a conversation")
    async with simulator_pace(simulator, 60):
        first = await start_chat(
            gateway, prompt=prompt, max_tokens=max_tokens, conversation_id=conversation
        )
        await _stop_after_text(gateway, first)
    kept = await _kept(gateway, first)

    second = await start_chat(
        gateway, prompt="What did you just say?", max_tokens=20, conversation_id=conversation
    )
    await wait_status(gateway, second, {"completed"}, timeout_s=60)
    history = await temporal_client.get_workflow_handle(second).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    (request,) = await temporal_client.data_converter.decode(started.input.payloads, [ChatRequest])
    assert [(t.role, t.content) for t in request.history] == [
        ("user", prompt),
        ("assistant", kept),
    ]
    assert request.parent_id == first


async def test_a_stop_before_any_text_is_a_cancellation(gateway, simulator) -> None:
    # the provider stalls before its first token
    async with simulator_fault(simulator, fault="stall", count=1, after_tokens=0, stall_s=30):
        workflow_id = await start_chat(gateway, prompt="Slow to begin", max_tokens=50)
        await wait_status(gateway, workflow_id, {"running"})
        await asyncio.sleep(0.5)
        await gateway.post(f"/api/workflows/{workflow_id}/cancel")
        status = await wait_status(gateway, workflow_id, {"cancelled", "stopped"}, timeout_s=30)
    assert status["stage"] == "cancelled", status
    assert await _kept(gateway, workflow_id) == ""


async def test_a_worker_killed_while_the_stop_is_saved(
    fleet: LocalStack, gateway, simulator, temporal_client: Client
) -> None:
    """kill -9 of the worker running the generation right after Stop: its successor
    ends the generation and the chat keeps the text shown, once."""
    max_tokens = 800
    prompt = prompt_ending("length", max_tokens, "A stop that outlives its worker")
    async with simulator_pace(simulator, 60):
        workflow_id = await start_chat(gateway, prompt=prompt, max_tokens=max_tokens)
        events: list[dict] = []  # type: ignore[type-arg]
        stopped = False
        stream = stream_events(gateway, workflow_id)
        async with asyncio.timeout(120), contextlib.aclosing(stream) as received:
            async for event in received:
                events.append(event.as_dict())
                if not stopped and len(preview_text(events)) >= 40:
                    stopped = True
                    victim = await _generating_worker(fleet, temporal_client, workflow_id)
                    await gateway.post(f"/api/workflows/{workflow_id}/cancel")
                    victim.kill()
                    fleet.start_worker()  # keep two workers: the harness plays the supervisor
                if event.event in ("completed", "stopped", "cancelled", "failed"):
                    break
    assert events[-1]["event"] == "stopped", events[-3:]
    assert await _kept(gateway, workflow_id) == preview_text(events)
    assert (await generations_for(simulator, prompt))["completed"] == 0
    await keep_history(temporal_client.get_workflow_handle(workflow_id), "stopped-worker-killed")


async def _generating_worker(fleet: LocalStack, temporal: Client, workflow_id: str):  # type: ignore[no-untyped-def]
    """The worker process running the chat's generate_full_text now."""
    handle = temporal.get_workflow_handle(workflow_id)

    async def running_on() -> str | None:
        description = await handle.describe()
        for pending in description.raw_description.pending_activities:
            if pending.activity_type.name == "generate_full_text" and pending.state == 2:
                return str(pending.last_worker_identity)  # PENDING_ACTIVITY_STATE_STARTED
        return None

    identity = await wait_for(running_on, timeout_s=10, interval_s=0.05)
    process = worker_process(fleet, identity)
    assert process is not None, identity
    return process


def test_the_gateway_and_the_ui_agree_on_the_text_a_stop_keeps() -> None:
    """common.preview (what a stopped chat keeps) and the UI's LiveAnswer (what it
    shows) follow the same rules; the UI imports nothing of ours, so this keeps the
    two copies from drifting apart."""
    from common.preview import shown_preview
    from ui.gateway_client import ChatEvent
    from ui.live_answer import LiveAnswer

    logs: list[list[tuple[str, dict]]] = [  # type: ignore[type-arg]
        [("delta", {"attempt": 1, "offset": 0, "text": "Hello "}),
         ("delta", {"attempt": 1, "offset": 6, "text": "world"}),
         ("stopping", {"by": "user"}),
         ("delta", {"attempt": 1, "offset": 11, "text": ", unseen"})],
        [("delta", {"attempt": 1, "offset": 0, "text": "First try"}),
         ("reset", {"attempt": 2, "reason": "restarted"}),
         ("delta", {"attempt": 2, "offset": 0, "text": "Second"}),
         ("delta", {"attempt": 1, "offset": 9, "text": " late"}),
         ("stopping", {}),
         ("reset", {"attempt": 3})],
        [("delta", {"attempt": 1, "offset": 0, "text": "Resumed "}),
         ("delta", {"attempt": 2, "offset": 8, "text": "on another worker"}),
         ("delta", {"attempt": 2, "offset": 4, "text": "med on another worker"})],
        [("delta", {"attempt": 1, "offset": 0, "text": "Old run"}),
         ("stopping", {}),
         ("reset", {"scope": "run", "reason": "operator reset"}),
         ("delta", {"attempt": 1, "offset": 0, "text": "New run"})],
    ]  # fmt: skip
    expected = ["Hello world", "Second", "Resumed on another worker", "New run"]
    for log, kept in zip(logs, expected, strict=True):
        answer = LiveAnswer()
        for seq, (type_, data) in enumerate(log, start=1):
            answer.apply(ChatEvent(id=seq, type=type_, data=data))
        assert shown_preview(log) == answer.preview == kept, log
