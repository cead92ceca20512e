"""What the workers, the gateway and the fleet CLI agree on about the workflows.

Names and worker-side settings that more than one process needs: the gateway starts
and queries workflows by these names (it never imports workflow code), the fleet CLI
explains recovery with the worker's own timeouts and finds a worker's pid from its
identity. One place, so nothing has to be kept equal by hand.
"""

from __future__ import annotations

import os
import re
import socket
from datetime import timedelta

CHAT_WORKFLOW = "ChatStreamingWorkflow"
RECONCILE_WORKFLOW = "ReconcileChatsWorkflow"
PROGRESS_QUERY = "progress"
RECONCILE_SCHEDULE_ID = "durable-chat-reconcile"
RETENTION_WORKFLOW = "PurgeExpiredResponsesWorkflow"
RETENTION_SCHEDULE_ID = "durable-chat-responses-retention"
# The SSE event types that end a chat's stream (`GET /api/workflows/{id}/events`): the
# chat's own ends, and those the reconciler writes after an operator's terminate or a
# timeout. The UI, a client of the HTTP API only, knows them from the API's docs.
TERMINAL_EVENTS = frozenset(
    {"completed", "failed", "cancelled", "stopped", "terminated", "timed_out"}
)

# Workflow tasks of a chat take milliseconds (replaying a maximal history: well under a
# second), so 2 s only ever expires for a worker that died holding one (set at start).
WORKFLOW_TASK_TIMEOUT = timedelta(seconds=2)

# How long a workflow task waits on a dead worker's sticky queue before any worker may
# take it (the SDK default is 10 s). Short, so a killed worker is replaced quickly; the
# cost is an occasional full replay when a live worker is slow to poll.
STICKY_SCHEDULE_TO_START = timedelta(seconds=1)
# Heartbeat details reach the server at most this late (the SDK default is up to 80% of
# the heartbeat timeout): a resumable generation's resume point must not lag behind.
MAX_HEARTBEAT_THROTTLE = timedelta(seconds=1)
# Activity polls each worker keeps open at the server (the SDK's default). A worker that
# freezes (SIGSTOP, a stalled VM) leaves them open: the server hands each of them a task
# it cannot run, which then times out. Retry budgets count them (workflows/policies.py).
ACTIVITY_TASK_POLLS = 5
# On SIGTERM, in-flight activities get this long to finish before they are cancelled.
GRACEFUL_SHUTDOWN = timedelta(seconds=5)

_IDENTITY = re.compile(r"^worker-(\d+)@(.+)$")


def worker_identity() -> str:
    """`worker-<pid>@<host>`: enough to find, and kill, the process that did something."""
    return f"worker-{os.getpid()}@{socket.gethostname()}"


def parse_identity(identity: str) -> tuple[int, str] | None:
    """`worker-<pid>@<host>` -> (pid, host); None for any other identity."""
    match = _IDENTITY.match(identity)
    return (int(match.group(1)), match.group(2)) if match else None
