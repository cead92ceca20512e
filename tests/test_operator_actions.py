"""What an operator does in the Temporal UI or CLI leaves a clean, final end.

Every case is driven with Temporal's own CLI (`temporal workflow terminate|reset|cancel`)
against the suite's dev server, as an operator would, and checked as a user sees it:
`GET /status`, the SSE stream's terminal event, the chunks by cursor, the running-chats
limit, the answer-cache claim. docs/operations.md has the table of what each action does.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client, ScheduleActionStartWorkflow

from common.models import ChatRequest
from testing.chats import read_all_chunks, start_chat, start_chat_directly, wait_for, wait_status
from testing.keys import auth_headers
from testing.operator import operator, reset_point_after, reset_point_before
from testing.oracle import expected_answer, prompt_ending, unique_prompt
from testing.simulator import simulator_pace, simulator_variant
from testing.sse import preview_text, read_sse
from testing.stack import LocalStack
from tests.helpers import keep_history

# What "within a few seconds" means for a close that no workflow code writes.
CLOSE_VISIBLE_S = 10


def long_prompt(max_tokens: int = 400) -> str:
    """A prompt whose answer runs to `max_tokens` (natural answers may be much shorter):
    with the simulator slowed, seconds of generation to act in."""
    return prompt_ending("length", max_tokens)


async def checkpointing_chat(
    temporal: Client, db: asyncpg.Pool, max_tokens: int, saved: int
) -> tuple[ChatRequest, Any]:
    """A chat of tiny chunks saved one at a time (checkpointing takes seconds), returned
    once `saved` of them are in PostgreSQL: an operator's action lands mid-checkpoint."""
    request = ChatRequest(
        prompt=long_prompt(max_tokens),
        max_tokens=max_tokens,
        chunk_target_chars=32,
        checkpoint_window=1,
    )
    handle = await start_chat_directly(temporal, request)
    await wait_for(
        lambda: db.fetchval(
            "SELECT count(*) >= $2 FROM chunks WHERE workflow_id = $1", handle.id, saved
        ),
        timeout_s=30,
        interval_s=0.02,
    )
    return request, handle


async def row(db: asyncpg.Pool, workflow_id: str) -> asyncpg.Record:
    found = await db.fetchrow("SELECT * FROM generations WHERE workflow_id = $1", workflow_id)
    assert found is not None
    return found


async def wait_row(db: asyncpg.Pool, workflow_id: str, predicate: str, timeout_s: float) -> None:
    async def holds() -> bool:
        return bool(
            await db.fetchval(
                f"SELECT {predicate} FROM generations WHERE workflow_id = $1", workflow_id
            )
        )

    await wait_for(holds, timeout_s=timeout_s, interval_s=0.1)


async def live_text(db: asyncpg.Pool, workflow_id: str) -> bool:
    """Whether viewers have live text of the chat's answer (a `delta` event)."""
    return bool(
        await db.fetchval(
            "SELECT count(*) > 0 FROM chat_events WHERE workflow_id = $1 AND type = 'delta'",
            workflow_id,
        )
    )


async def waits_on_the_cache(temporal: Client, workflow_id: str) -> bool:
    """Whether the chat's claim_or_reuse_answer is running (waiting on another's claim)."""
    description = await temporal.get_workflow_handle(workflow_id).describe()
    return any(
        a.activity_type.name == "claim_or_reuse_answer"
        and a.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        for a in description.raw_description.pending_activities
    )


async def sse_until_end(gateway: httpx.AsyncClient, workflow_id: str) -> list[dict[str, Any]]:
    return await asyncio.wait_for(read_sse(gateway, workflow_id), timeout=60)


def terminal(events: list[dict[str, Any]]) -> dict[str, Any]:
    assert events, "the stream ended without any event"
    return events[-1]


# --- terminate ------------------------------------------------------------------------


async def test_terminate_mid_generation_is_a_visible_final_end(
    fleet: LocalStack, gateway: httpx.AsyncClient, simulator: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    async with simulator_pace(simulator, 20):  # 400 tokens: 20 s of generation
        workflow_id = await start_chat(gateway, prompt=long_prompt(), max_tokens=400)
        stream = asyncio.create_task(sse_until_end(gateway, workflow_id))
        await wait_status(gateway, workflow_id, {"running"})
        await wait_for(lambda: live_text(db, workflow_id), timeout_s=30)  # text on screen
        reason = f"stuck chat {uuid.uuid4().hex[:6]}"
        await operator(
            fleet, "workflow", "terminate", "--workflow-id", workflow_id, "--reason", reason
        )
        events = await stream  # ends: the terminal event came, though no workflow wrote it

    end = terminal(events)
    assert end["event"] == "terminated"
    assert reason in end["data"]["error"]
    status = await wait_status(gateway, workflow_id, {"terminated"}, timeout_s=CLOSE_VISIBLE_S)
    assert status["stage"] == "terminated"
    assert status["error"].startswith("Terminated by an operator with the temporal CLI")
    assert status["error"].endswith(reason)
    assert status["retryable"] is True
    record = await row(db, workflow_id)
    assert record["status"] == "terminated" and record["completed_at"] is not None


async def test_terminate_mid_checkpoint_keeps_saved_chunks(
    fleet: LocalStack,
    gateway: httpx.AsyncClient,
    temporal_client: Client,
    db: asyncpg.Pool,
) -> None:
    request, handle = await checkpointing_chat(temporal_client, db, 1000, saved=5)
    await operator(fleet, "workflow", "terminate", "--workflow-id", handle.id, "--reason", "x")
    status = await wait_status(gateway, handle.id, {"terminated"}, timeout_s=CLOSE_VISIBLE_S)
    events = await sse_until_end(gateway, handle.id)
    assert terminal(events)["event"] == "terminated"
    saved = await read_all_chunks(gateway, handle.id)
    assert 5 <= len(saved) < status["total_chunks"]
    full = expected_answer(request.prompt, request.max_tokens)
    assert full.startswith("".join(c["text"] for c in saved))


# --- timeout and cancel -----------------------------------------------------------------


async def test_workflow_execution_timeout_is_a_final_end(
    fleet: LocalStack,
    gateway: httpx.AsyncClient,
    simulator: httpx.AsyncClient,
    temporal_client: Client,
) -> None:
    async with simulator_pace(simulator, 20):
        request = ChatRequest(prompt=long_prompt(), max_tokens=400)
        handle = await start_chat_directly(
            temporal_client, request, execution_timeout=timedelta(seconds=4)
        )
        events = await sse_until_end(gateway, handle.id)
    assert terminal(events)["event"] == "timed_out"
    status = await wait_status(gateway, handle.id, {"timed_out"}, timeout_s=CLOSE_VISIBLE_S)
    assert "Timed out" in status["error"] and "4 s" in status["error"]


async def test_cancel_from_the_cli(
    fleet: LocalStack, gateway: httpx.AsyncClient, simulator: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    async with simulator_pace(simulator, 20):
        workflow_id = await start_chat(gateway, prompt=long_prompt(), max_tokens=400)
        stream = asyncio.create_task(sse_until_end(gateway, workflow_id))
        await wait_for(lambda: live_text(db, workflow_id), timeout_s=30)
        await operator(fleet, "workflow", "cancel", "--workflow-id", workflow_id)
        events = await stream
    # an operator's cancel is a stop like any other: the text shown so far is kept
    assert terminal(events)["event"] == "stopped"
    await wait_status(gateway, workflow_id, {"stopped"}, timeout_s=CLOSE_VISIBLE_S)
    chunks = (await gateway.get(f"/api/workflows/{workflow_id}/chunks")).json()["chunks"]
    assert "".join(c["text"] for c in chunks) == preview_text(events)


# --- reset --------------------------------------------------------------------------------


async def test_reset_before_the_llm_call_serves_exactly_the_new_answer(
    fleet: LocalStack,
    gateway: httpx.AsyncClient,
    simulator: httpx.AsyncClient,
    temporal_client: Client,
    db: asyncpg.Pool,
) -> None:
    prompt = unique_prompt()
    workflow_id = await start_chat(gateway, prompt=prompt, max_tokens=200, cache=False)
    await wait_status(gateway, workflow_id, {"completed"})
    first = "".join(c["text"] for c in await read_all_chunks(gateway, workflow_id))
    assert first == expected_answer(prompt, 200)
    first_events = await read_sse(gateway, workflow_id)
    point = await reset_point_before(temporal_client, workflow_id, "generate_full_text")
    assert point is not None

    async with simulator_variant(simulator, "after-reset"):  # the model answers otherwise
        await operator(
            fleet, "workflow", "reset", "--workflow-id", workflow_id,
            "--event-id", str(point), "--reason", "operator test",
        )  # fmt: skip
        events = await asyncio.wait_for(
            read_sse(gateway, workflow_id, last_event_id=first_events[-1]["id"]), timeout=60
        )
    second = expected_answer(prompt, 200, variant="after-reset")
    assert second != first
    assert events[0]["event"] == "reset" and events[0]["data"]["scope"] == "run"
    assert terminal(events)["event"] == "completed"
    after_reset = {e["data"]["index"]: e["data"]["text"] for e in events if e["event"] == "chunk"}
    assert "".join(after_reset[i] for i in range(len(after_reset))) == second
    served = "".join(c["text"] for c in await read_all_chunks(gateway, workflow_id))
    assert served == second, "the cursor must serve exactly the new run's answer"
    status = await wait_status(gateway, workflow_id, {"completed"})
    assert status["chunks_saved"] == status["total_chunks"] == len(after_reset)
    record = await row(db, workflow_id)
    description = await temporal_client.get_workflow_handle(workflow_id).describe()
    assert record["run_id"] == record["answer_run_id"] == description.run_id
    await keep_history(temporal_client.get_workflow_handle(workflow_id), "operator-reset")


async def test_reset_mid_checkpoint_continues_the_same_answer(
    fleet: LocalStack,
    gateway: httpx.AsyncClient,
    simulator: httpx.AsyncClient,
    temporal_client: Client,
    db: asyncpg.Pool,
) -> None:
    request, handle = await checkpointing_chat(temporal_client, db, 600, saved=6)
    point = await reset_point_after(temporal_client, handle.id, "save_chunk", nth=3)
    assert point is not None
    async with simulator_variant(simulator, "not-asked-again"):
        await operator(
            fleet, "workflow", "reset", "--workflow-id", handle.id,
            "--event-id", str(point), "--reason", "mid-checkpoint",
        )  # fmt: skip
        await wait_status(gateway, handle.id, {"completed"}, timeout_s=60)
    answer = expected_answer(request.prompt, request.max_tokens)
    served = "".join(c["text"] for c in await read_all_chunks(gateway, handle.id))
    assert served == answer
    events = await read_sse(gateway, handle.id)
    resets = [i for i, e in enumerate(events) if e["event"] == "reset"]
    assert resets, "viewers must be told of the reset"
    after = events[resets[-1] :]
    chunks = {e["data"]["index"]: e["data"]["text"] for e in after if e["event"] == "chunk"}
    assert "".join(chunks[i] for i in range(len(chunks))) == answer
    assert terminal(events)["event"] == "completed"


# --- limits and cache ----------------------------------------------------------------------


async def test_terminated_chats_never_lock_a_user_out(
    fleet: LocalStack, simulator: httpx.AsyncClient, temporal_client: Client
) -> None:
    limit = 12
    _, url = fleet.start_extra_gateway({"MAX_CONCURRENT_CHATS": str(limit)})
    user = "other"
    async with (
        httpx.AsyncClient(base_url=url, timeout=30, headers=auth_headers(user)) as client,
        simulator_pace(simulator, 5),
    ):
        started = [
            await start_chat(client, prompt=long_prompt(), max_tokens=400) for _ in range(limit)
        ]

        async def running() -> int:
            counted = await temporal_client.count_workflows(
                f'ChatUserId = "{user}" AND ExecutionStatus = "Running"'
            )
            return counted.count

        await wait_for(lambda: _equals(running(), limit), timeout_s=10)
        refused = await client.post("/api/workflows/start", json={"prompt": unique_prompt()})
        assert refused.status_code == 429, refused.text
        await operator(
            fleet, "workflow", "terminate", "--yes", "--reason", "clean up",
            "--query", f'ChatUserId = "{user}" AND ExecutionStatus = "Running"',
        )  # fmt: skip
        await wait_for(lambda: _equals(running(), 0), timeout_s=10)
        again = [
            await start_chat(client, prompt=long_prompt(), max_tokens=400) for _ in range(limit)
        ]
        assert not set(again) & set(started)
        await operator(
            fleet, "workflow", "terminate", "--yes", "--reason", "clean up",
            "--query", f'ChatUserId = "{user}" AND ExecutionStatus = "Running"',
        )  # fmt: skip


async def _answers(db: asyncpg.Pool) -> bool:
    try:
        return bool(await db.fetchval("SELECT true"))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False


async def _equals(value: Any, expected: int) -> bool:
    return bool(await value == expected)


async def test_a_terminated_chat_releases_its_cache_claim(
    fleet: LocalStack,
    gateway: httpx.AsyncClient,
    simulator: httpx.AsyncClient,
    temporal_client: Client,
    db: asyncpg.Pool,
) -> None:
    prompt = long_prompt(300)
    async with simulator_pace(simulator, 40):  # 7.5 s per answer
        owner = await start_chat(gateway, prompt=prompt, max_tokens=300)
        await wait_row(db, owner, "stage = 'generating'", timeout_s=30)
        # The identical chat waits on the owner's claim instead of calling the LLM again.
        waiter = await start_chat(gateway, prompt=prompt, max_tokens=300)
        await wait_for(lambda: waits_on_the_cache(temporal_client, waiter), timeout_s=30)
        assert (await row(db, waiter))["stage"] == "validating"
        await operator(fleet, "workflow", "terminate", "--workflow-id", owner, "--reason", "claim")
        status = await wait_status(gateway, waiter, {"completed"}, timeout_s=60)
    assert status["cache_hit"] is False, "the waiter generated its own answer"
    answer = "".join(c["text"] for c in await read_all_chunks(gateway, waiter))
    assert answer == expected_answer(prompt, 300)
    claim = await db.fetchrow(
        "SELECT state, owner_workflow_id FROM answer_cache WHERE owner_workflow_id = $1", owner
    )
    assert claim is None


# --- the reconciler --------------------------------------------------------------------------


async def test_reconcile_repairs_a_terminate_made_while_postgres_was_down(
    fleet: LocalStack,
    gateway: httpx.AsyncClient,
    simulator: httpx.AsyncClient,
    temporal_client: Client,
    db: asyncpg.Pool,
) -> None:
    async with simulator_pace(simulator, 20):
        workflow_id = await start_chat(gateway, prompt=long_prompt(), max_tokens=400)
        await wait_row(db, workflow_id, "stage = 'generating'", timeout_s=30)
        assert fleet.postgres is not None
        fleet.postgres.stop()
        try:
            await operator(
                fleet, "workflow", "terminate", "--workflow-id", workflow_id, "--reason", "pg down"
            )
        finally:
            fleet.start_postgres()
    await db.expire_connections()
    await wait_for(lambda: _answers(db), timeout_s=30)

    # The reconcile Schedule (every minute); an operator may also trigger it at once.
    schedule = await temporal_client.get_schedule_handle("durable-chat-reconcile").describe()
    assert schedule.schedule.spec.intervals, "the workers created the reconcile Schedule"
    # Workers of other task queues (tests' own, as a canary would be) leave it alone.
    action = schedule.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow) and action.task_queue == "chat-queue"
    await operator(fleet, "schedule", "trigger", "--schedule-id", "durable-chat-reconcile")
    try:
        await wait_row(db, workflow_id, "status = 'terminated'", timeout_s=150)
    except TimeoutError:
        passes = [
            (w.id, w.status)
            async for w in temporal_client.list_workflows('WorkflowType = "ReconcileChatsWorkflow"')
        ]
        raise AssertionError(f"not repaired; reconcile runs: {passes[:10]}") from None
    record = await row(db, workflow_id)
    assert "pg down" in record["error"]
    passes = [
        w
        async for w in temporal_client.list_workflows(
            'WorkflowType = "ReconcileChatsWorkflow" AND TemporalScheduledById = '
            '"durable-chat-reconcile" AND ExecutionStatus = "Completed"'
        )
    ]
    assert passes, "the Schedule's reconcile pass is in Temporal, like everything else"
    await keep_history(temporal_client.get_workflow_handle(passes[0].id), "reconcile-pass")
    events = await read_sse(gateway, workflow_id)
    assert terminal(events)["event"] == "terminated"
