"""ReconcileChatsWorkflow: close the records of chats that ended without closing them.

A chat's workflow writes its own end (completed, failed, cancelled). A run that an
operator terminates, or whose execution timeout expires, runs no more code: its
record would say `running` forever. This workflow asks Temporal how each such chat
ended and writes it (final stage, a message for people, the terminal event viewers
wait for), and releases the chat's answer-cache claim.

It runs from a Temporal Schedule (`durable-chat-reconcile`, every
`RECONCILE_INTERVAL_S`, created by the workers; see docs/operations.md), and, for one
chat, whenever the gateway notices a closed chat whose record still says running
(workflow id `reconcile-<chat id>`). Both are ordinary workflows, visible in the
Temporal UI with the rest.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.reconcile import ReconcileActivities
    from common.contract import RECONCILE_WORKFLOW
    from common.models import ReconcileReport, ReconcileRequest

RECONCILE_TIMEOUT = timedelta(minutes=2)
# PostgreSQL or Temporal may be down (that is often why a record was left open):
# keep trying, at most every 10 s, until the next scheduled pass would start anyway.
RECONCILE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
)
RECONCILE_SCHEDULE_TO_CLOSE = timedelta(minutes=15)


@workflow.defn(name=RECONCILE_WORKFLOW)
class ReconcileChatsWorkflow:
    @workflow.run
    async def run(self, request: ReconcileRequest) -> ReconcileReport:
        which = ", ".join(request.workflow_ids[:3]) or f"unchanged for {request.older_than_s:g} s"
        return await workflow.execute_activity_method(
            ReconcileActivities.reconcile_chats,
            request,
            start_to_close_timeout=RECONCILE_TIMEOUT,
            schedule_to_close_timeout=RECONCILE_SCHEDULE_TO_CLOSE,
            heartbeat_timeout=timedelta(seconds=10),
            retry_policy=RECONCILE_RETRY,
            summary=f"reconcile_chats ({which})",
        )
