"""Temporal's own CLI as the operator: what tests and chaos runs do to chats the way an
operator would (terminate, reset, cancel, trigger a schedule)."""

from __future__ import annotations

import asyncio

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from devstack.stack import temporal_cli
from testing.stack import LocalStack


async def operator(stack: LocalStack, *args: str) -> str:
    """Run `temporal <args>` against the stack's server, as an operator would."""
    process = await asyncio.create_subprocess_exec(
        temporal_cli(),
        *args,
        "--address",
        stack.temporal_address,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = out.decode()
    assert process.returncode == 0, f"temporal {' '.join(args)} failed: {text}"
    return text


async def reset_point_before(temporal: Client, workflow_id: str, activity_type: str) -> int | None:
    """The event id of the workflow task completed that scheduled the first
    `activity_type`: a reset there runs that workflow task again, so the run goes on as
    if that activity had never been asked for (everything before it kept; the local
    activities of that task run again). None if it was not scheduled (yet)."""
    async for event in temporal.get_workflow_handle(workflow_id).fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            if attrs.activity_type.name == activity_type:
                return int(attrs.workflow_task_completed_event_id)
    return None


async def reset_point_after(
    temporal: Client, workflow_id: str, activity_type: str, nth: int = 1
) -> int | None:
    """The event id of the first workflow task completed after the `nth` completion of
    `activity_type` in the chat's history: where `temporal workflow reset --event-id`
    replays to, the run going on from right after that activity. None if there is none
    (yet)."""
    scheduled: dict[int, str] = {}
    completed = 0
    async for event in temporal.get_workflow_handle(workflow_id).fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            scheduled[event.event_id] = attrs.activity_type.name
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            done = event.activity_task_completed_event_attributes
            completed += scheduled.get(done.scheduled_event_id) == activity_type
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED and completed >= nth:
            return event.event_id
    return None
