"""The message a person reads when an operator or a timeout ended a chat (common.closes),
from close events as Temporal's CLI, UI and SDK record them (identities and reasons
observed on the dev server: temporal CLI 1.9.1, server 1.32.0, UI 2.54.1)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent, WorkflowExecutionTerminatedEventAttributes

from common.closes import describe_close
from common.models import Stage


class _Description:
    """The part of a WorkflowExecutionDescription that describe_close reads."""

    def __init__(self, timeout_s: float = 0) -> None:
        from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionResponse

        self.raw_description = DescribeWorkflowExecutionResponse()
        if timeout_s:
            self.raw_description.execution_config.workflow_execution_timeout.FromTimedelta(
                timedelta(seconds=timeout_s)
            )


def _terminated(reason: str, identity: str) -> HistoryEvent:
    return HistoryEvent(
        event_type=EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
        workflow_execution_terminated_event_attributes=WorkflowExecutionTerminatedEventAttributes(
            reason=reason, identity=identity
        ),
    )


@pytest.mark.parametrize(
    ("reason", "identity", "message"),
    [
        (
            "stuck",
            "temporal-cli:root@vm",
            "Terminated by an operator with the temporal CLI (temporal-cli:root@vm): stuck",
        ),
        (
            "stuck Terminated from the Web UI",
            "frontend-service",
            "Terminated by an operator in the Temporal UI: stuck",
        ),
        (
            "Terminated from the Web UI by ops@example.com",
            "ops@example.com",
            "Terminated by an operator in the Temporal UI: no reason given",
        ),
        ("cleanup", "6506@vm", "Terminated by an operator (6506@vm): cleanup"),
    ],
)
def test_a_terminate_says_who_and_why(reason: str, identity: str, message: str) -> None:
    description: Any = _Description()
    said, error_type = describe_close(Stage.TERMINATED, _terminated(reason, identity), description)
    assert (said, error_type) == (message, "Terminated")


def test_a_timeout_says_how_long_the_chat_was_allowed() -> None:
    description: Any = _Description(timeout_s=3600)
    closed = HistoryEvent(event_type=EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT)
    said, error_type = describe_close(Stage.TIMED_OUT, closed, description)
    assert error_type == "TimedOut"
    assert said.startswith("Timed out: the chat ran longer than its workflow execution timeout")
    assert "(1 h)" in said
