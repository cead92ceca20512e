"""purge_expired_responses: the retention of /v1 responses (RESPONSES_RETENTION_DAYS).

A stored response is deleted once it is older than the retention; one created with
`store: false` as soon as its chat has finished. Deleting takes the chat's text with it
(storage.responses). Idempotent: a response deleted once is gone; a retried pass
deletes what is still expired. Runs from a Temporal Schedule (workflows/retention.py).
"""

from __future__ import annotations

import structlog
from temporalio import activity
from temporalio.client import Client

from activities.schedules import ensure_interval_schedule
from common.contract import RETENTION_SCHEDULE_ID, RETENTION_WORKFLOW
from common.models import PurgeReport, PurgeRequest
from storage import ResponseStore

log = structlog.get_logger(__name__)


class RetentionActivities:
    def __init__(self, responses: ResponseStore) -> None:
        self._responses = responses

    @activity.defn(name="purge_expired_responses")
    async def purge_expired_responses(self, request: PurgeRequest) -> PurgeReport:
        deleted = 0
        while deleted < request.limit:
            batch = await self._responses.purge_expired(min(request.batch, request.limit - deleted))
            deleted += len(batch)
            activity.heartbeat(deleted)
            if len(batch) < request.batch:
                break
        if deleted:
            log.info("expired responses deleted", deleted=deleted)
        return PurgeReport(deleted=deleted)


async def ensure_retention_schedule(client: Client, task_queue: str, every_s: float) -> None:
    """The Schedule that runs PurgeExpiredResponsesWorkflow every `every_s` seconds."""
    await ensure_interval_schedule(
        client,
        RETENTION_SCHEDULE_ID,
        workflow=RETENTION_WORKFLOW,
        arg=PurgeRequest(),
        workflow_id="purge-expired-responses",
        task_queue=task_queue,
        every_s=every_s,
        summary="Delete /v1 responses past their retention (RESPONSES_RETENTION_DAYS)",
    )
