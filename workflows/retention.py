"""PurgeExpiredResponsesWorkflow: one retention pass over /v1 responses.

Started by the Temporal Schedule `durable-chat-responses-retention` every
RESPONSES_SWEEP_INTERVAL_S (created by the workers, like the reconciler's), visible
in the Temporal UI with the rest; docs/openai-api.md says what is deleted when.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.retention import RetentionActivities
    from common.contract import RETENTION_WORKFLOW
    from common.models import PurgeReport, PurgeRequest

# PostgreSQL may be down: keep trying, at most every 10 s, within the pass's 10 minutes.
PURGE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
)


@workflow.defn(name=RETENTION_WORKFLOW)
class PurgeExpiredResponsesWorkflow:
    @workflow.run
    async def run(self, request: PurgeRequest) -> PurgeReport:
        return await workflow.execute_activity_method(
            RetentionActivities.purge_expired_responses,
            request,
            start_to_close_timeout=timedelta(minutes=2),
            schedule_to_close_timeout=timedelta(minutes=10),
            heartbeat_timeout=timedelta(seconds=30),
            retry_policy=PURGE_RETRY,
            summary="purge_expired_responses",
        )
