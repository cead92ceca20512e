"""What the real-model tests read: the recorded answer, llama-server's own log, the
worker generating a chat, the LLM call counters."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
from temporalio.client import Client
from temporalio.converter import DataConverter

from testing.chats import wait_for
from testing.keys import TEST_USER_ASSERTION_SECRET
from testing.stack import LocalStack

# A stalled stream (llama-server stopped mid-answer keeps it open, silent, ~30 s) is
# given up after this long, sooner than the 30 s default.
IDLE_TIMEOUT_S = 10
# Settings of the real-model stack's workers and gateway.
REAL_MODEL_ENV = {
    # The UI acts for the person logged in (tests/browser/harness.py has the same).
    "USER_ASSERTION_SECRET": TEST_USER_ASSERTION_SECRET,
    "UI_SERVICE_USERS": "ui",
    "LLM_STREAM_IDLE_TIMEOUT_S": str(IDLE_TIMEOUT_S),
    # Chats started without max_tokens (the UI's) end sooner: about 5 s at ~40 tokens/s.
    "DEFAULT_MAX_TOKENS": "200",
}

# The field that counts LLM generations (every attempt, a retry included), on the chat's
# status if it has one, else the growth of the same field of GET /api/stats. Another
# name? Change it here.
LLM_CALLS_FIELD = "llm_calls"

# llama-server logs one line per request it starts on a slot (INFO, the default level):
#   slot launch_slot_: id  0 | task 7 | processing task, is_child = 0
# also for a request it then rejects (prompt over the context), before the error line.
REQUEST_STARTED = "| processing task"
CONTEXT_EXCEEDED = "exceeds the available context size"


def llama_log(stack: LocalStack) -> str:
    """Everything every llama-server of this stack has logged (restarts included)."""
    return "".join(
        p.log_path.read_text(errors="replace") for p in stack.processes if p.name == "llama"
    )


def llama_requests(stack: LocalStack) -> int:
    """Requests llama-server has started generating (or rejected) so far."""
    return llama_log(stack).count(REQUEST_STARTED)


async def generated_answer(temporal: Client, workflow_id: str) -> dict[str, Any]:
    """The result of the chat's completed `generate_full_text` (text, usage, model,
    finish_reason), as recorded in its history: the answer the workflow checkpointed."""
    history = await temporal.get_workflow_handle(workflow_id).fetch_history()
    activity_types = {
        event.event_id: event.activity_task_scheduled_event_attributes.activity_type.name
        for event in history.events
        if event.HasField("activity_task_scheduled_event_attributes")
    }
    for event in reversed(history.events):
        if not event.HasField("activity_task_completed_event_attributes"):
            continue
        completed = event.activity_task_completed_event_attributes
        if activity_types.get(completed.scheduled_event_id) == "generate_full_text":
            payloads = completed.result.payloads
            [value] = DataConverter.default.payload_converter.from_payloads(payloads)
            return dict(value)
    raise AssertionError(f"{workflow_id}: no completed generate_full_text in its history")


async def generating_worker(
    temporal: Client, db: asyncpg.Pool, workflow_id: str, min_deltas: int = 3
) -> str:
    """The identity (`worker-<pid>@<host>`) of the worker running the chat's
    `generate_full_text`, once at least `min_deltas` live text events were published:
    the model is mid-answer."""

    async def probe() -> str | None:
        deltas = await db.fetchval(
            "SELECT count(*) FROM chat_events WHERE workflow_id = $1 AND type = 'delta'",
            workflow_id,
        )
        if deltas < min_deltas:
            return None
        description = await temporal.get_workflow_handle(workflow_id).describe()
        for pending in description.raw_description.pending_activities:
            if pending.activity_type.name == "generate_full_text":
                return pending.last_worker_identity or None
        return None

    return await wait_for(probe, timeout_s=120, interval_s=0.1)


async def stats(gateway: httpx.AsyncClient) -> dict[str, Any]:
    response = await gateway.get("/api/stats")
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def llm_calls(status: dict[str, Any], before: dict[str, Any], after: dict[str, Any]) -> int:
    """LLM generations of one chat: its status field, else what it added to the stats
    (the tests run one chat at a time, so the growth is that chat's)."""
    if LLM_CALLS_FIELD in status:
        return int(status[LLM_CALLS_FIELD])
    return int(after[LLM_CALLS_FIELD]) - int(before[LLM_CALLS_FIELD])
