"""How a chat's workflow stands in Temporal, and what to tell a person when it closed.

Temporal is the authority on whether a chat still runs: a run that an operator
terminated, or whose execution timeout expired, runs no more code and so cannot
write its own end. The gateway (status, SSE streams) and the reconciler
(workflows/reconcile.py) ask here, and the reconciler writes what they learn.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHistoryEventFilterType,
)
from temporalio.service import RPCError, RPCStatusCode

from common.models import Stage

RPC_TIMEOUT = timedelta(seconds=5)

_CLOSED_STAGES = {
    WorkflowExecutionStatus.COMPLETED: Stage.COMPLETED,
    WorkflowExecutionStatus.FAILED: Stage.FAILED,
    WorkflowExecutionStatus.CANCELED: Stage.CANCELLED,
    WorkflowExecutionStatus.TERMINATED: Stage.TERMINATED,
    WorkflowExecutionStatus.TIMED_OUT: Stage.TIMED_OUT,
}


@dataclass(frozen=True)
class RunState:
    """The chat's current run in Temporal: running, or closed and how."""

    run_id: str
    running: bool
    stage: Stage | None = None
    """The final stage a closed run ends the chat with."""
    message: str = ""
    error_type: str = ""


NOT_FOUND = RunState(
    run_id="",
    running=False,
    stage=Stage.FAILED,
    message="The chat's workflow no longer exists in Temporal (deleted, or past retention).",
    error_type="WorkflowNotFound",
)


async def current_run_id(client: Client, workflow_id: str) -> str | None:
    """The run id of the workflow's current (latest) run; None for an unknown id."""
    try:
        description = await client.get_workflow_handle(workflow_id).describe(
            rpc_timeout=RPC_TIMEOUT
        )
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    return description.run_id


async def run_state(client: Client, workflow_id: str) -> RunState:
    """Describe the current run; for a closed one, read its close event for the message."""
    handle = client.get_workflow_handle(workflow_id)
    try:
        description = await handle.describe(rpc_timeout=RPC_TIMEOUT)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return NOT_FOUND
        raise
    return await closed_state(client, description)


async def closed_state(client: Client, description: WorkflowExecutionDescription) -> RunState:
    """RunState of a described run (reads the close event of a closed one)."""
    status = description.status
    if status in (None, WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.CONTINUED_AS_NEW):
        # continued-as-new: the chain goes on in a new run (durable-chat never does it)
        return RunState(run_id=description.run_id, running=True)
    stage = _CLOSED_STAGES[status]
    handle = client.get_workflow_handle(description.id, run_id=description.run_id)
    close: HistoryEvent | None = None
    async for event in handle.fetch_history_events(
        event_filter_type=WorkflowHistoryEventFilterType.CLOSE_EVENT, rpc_timeout=RPC_TIMEOUT
    ):
        close = event
    message, error_type = describe_close(stage, close, description)
    return RunState(
        run_id=description.run_id,
        running=False,
        stage=stage,
        message=message,
        error_type=error_type,
    )


def describe_close(
    stage: Stage, close: HistoryEvent | None, description: WorkflowExecutionDescription
) -> tuple[str, str]:
    """A message for a person and an error type, from a run's close event."""
    if close is not None and close.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED:
        attrs = close.workflow_execution_terminated_event_attributes
        where, reason = _origin(attrs.identity, attrs.reason)
        return f"Terminated by an operator {where}: {reason}", "Terminated"
    if stage is Stage.TIMED_OUT:
        timeout = description.raw_description.execution_config.workflow_execution_timeout
        limit = f" ({_duration(timeout.ToTimedelta())})" if timeout.seconds or timeout.nanos else ""
        return (
            f"Timed out: the chat ran longer than its workflow execution timeout{limit} "
            "and Temporal stopped it.",
            "TimedOut",
        )
    if stage is Stage.CANCELLED:
        return "The chat was cancelled.", "Cancelled"
    if stage is Stage.FAILED:
        detail = ""
        if close is not None and close.HasField("workflow_execution_failed_event_attributes"):
            detail = close.workflow_execution_failed_event_attributes.failure.message
        return f"The chat failed: {detail or 'see its history in the Temporal UI'}", "Failed"
    return "", ""


# The Temporal UI appends this to the reason an operator types (with "by <user>" when
# the UI has logins); the server records identity "frontend-service" for it.
_WEB_UI_SUFFIX = re.compile(r"\s*Terminated from the Web UI(?: by .*)?$", re.IGNORECASE)


def _origin(identity: str, reason: str) -> tuple[str, str]:
    """Where a terminate came from (from the identity Temporal recorded) and its reason."""
    lowered = identity.lower()
    from_ui = bool(_WEB_UI_SUFFIX.search(reason)) or lowered == "frontend-service"
    reason = _WEB_UI_SUFFIX.sub("", reason).strip() or "no reason given"
    if from_ui:
        return "in the Temporal UI", reason
    if lowered.startswith("temporal-cli"):
        return f"with the temporal CLI ({identity})", reason
    if not identity:
        return "in Temporal", reason
    return f"({identity})", reason


def _duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    if seconds < 120:
        return f"{seconds:g} s"
    if seconds < 3600:
        return f"{seconds / 60:g} min"
    return f"{seconds / 3600:g} h"
