"""reconcile_chats: write the end of chats whose workflow closed without writing it.

See workflows/reconcile.py for when it runs. For each chat it asks Temporal how the
current run stands (common.closes); a closed run's record gets its final stage and
message and the terminal event viewers wait for, its answer-cache claim is released,
and LLM calls left open are closed (a background response still generating at the
provider is cancelled there, so it is not billed to the end). Idempotent: a chat
already closed is left as it is.
"""

from __future__ import annotations

import asyncio

import structlog
from openai import AsyncOpenAI, OpenAIError
from temporalio import activity
from temporalio.client import Client

from activities.billing import CallLedger
from activities.schedules import ensure_interval_schedule
from common import metrics
from common.closes import run_state
from common.contract import RECONCILE_SCHEDULE_ID, RECONCILE_WORKFLOW
from common.models import ReconcileReport, ReconcileRequest
from common.pricing import ModelPrice
from storage import AnswerCacheStore, ChatStore, LlmCallStore

log = structlog.get_logger(__name__)

SCHEDULE_ID = RECONCILE_SCHEDULE_ID
# Chats checked at once (each is a describe and, for a closed one, a history read).
_CONCURRENCY = 8


class ReconcileActivities:
    def __init__(
        self,
        client: Client,
        chats: ChatStore,
        cache: AnswerCacheStore,
        calls: LlmCallStore,
        prices: dict[str, ModelPrice],
        llm: AsyncOpenAI | None = None,
    ) -> None:
        self._client = client
        self._chats = chats
        self._cache = cache
        self._calls = calls
        self._prices = prices
        self._llm = llm

    @activity.defn(name="reconcile_chats")
    async def reconcile_chats(self, request: ReconcileRequest) -> ReconcileReport:
        ids = request.workflow_ids or await self._chats.unfinished_chats(
            request.older_than_s, request.limit
        )
        report = ReconcileReport(checked=len(ids))
        gate = asyncio.Semaphore(_CONCURRENCY)

        errors: list[BaseException] = []

        async def check(workflow_id: str) -> None:
            async with gate:
                try:
                    released = await self._reconcile_one(workflow_id)
                except Exception as err:  # one chat must not keep the others unrepaired
                    errors.append(err)
                    report.failed.append(workflow_id)
                    log.warning(
                        "chat not reconciled", workflow_id=workflow_id, error=repr(err)[:300]
                    )
                    return
                finally:
                    activity.heartbeat(workflow_id)
            if released is not None:
                report.repaired.append(workflow_id)
                report.claims_released += released

        await asyncio.gather(*(check(i) for i in ids))
        if errors and len(errors) == len(ids):
            raise errors[0]  # nothing could be checked (PostgreSQL or Temporal down): retry
        if report.repaired:
            log.warning(
                "chat records closed from Temporal",
                repaired=len(report.repaired),
                checked=report.checked,
                chats=report.repaired[:20],
            )
        return report

    async def _reconcile_one(self, workflow_id: str) -> int | None:
        """Close the chat's record if its run closed; the cache claims released, or None."""
        state = await run_state(self._client, workflow_id)
        if state.running or state.stage is None:
            return None
        closed = await self._chats.close_run(
            workflow_id, state.run_id, state.stage, state.message, state.error_type
        )
        if not closed:
            return None
        released = await self._cache.release_all(workflow_id)
        await self._close_open_calls(workflow_id, state.message)
        # The workflow counts its own ends; these it could not count.
        activity.metric_meter().create_counter(metrics.CHATS_FINISHED).add(
            1, {"outcome": state.stage.value}
        )
        log.info(
            "chat record closed",
            workflow_id=workflow_id,
            stage=state.stage.value,
            message=state.message,
            claims_released=released,
        )
        return released

    async def _close_open_calls(self, workflow_id: str, why: str) -> None:
        open_calls = await self._calls.open_calls(workflow_id, except_key=None)
        if self._llm is not None:
            for call in open_calls:
                if call.mode != "resume":
                    continue
                try:
                    await self._llm.responses.cancel(call.call_key)
                except OpenAIError as err:
                    log.info(
                        "background response not cancelled", call=call.call_key, error=str(err)
                    )
        ledger = CallLedger(self._calls, self._prices, workflow_id, 0, "", "", 0)
        await ledger.close_interrupted(except_key=None, error=f"the chat ended: {why}")


async def ensure_reconcile_schedule(client: Client, task_queue: str, every_s: float) -> None:
    """The Schedule that runs ReconcileChatsWorkflow every `every_s` seconds."""
    await ensure_interval_schedule(
        client,
        SCHEDULE_ID,
        workflow=RECONCILE_WORKFLOW,
        arg=ReconcileRequest(),
        workflow_id="reconcile-chats",
        task_queue=task_queue,
        every_s=every_s,
        summary="Close the records of chats that ended without closing them",
    )
