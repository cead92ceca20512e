"""The Temporal Schedules the workers keep: one workflow started every few seconds.

Every worker calls `ensure_interval_schedule` at start; the first one creates the
schedule, later ones bring its action and interval up to date. Each pass is an
ordinary workflow, visible in the Temporal UI with the rest (docs/operations.md).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import structlog
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError

log = structlog.get_logger(__name__)


async def ensure_interval_schedule(
    client: Client,
    schedule_id: str,
    *,
    workflow: str,
    arg: Any,
    workflow_id: str,
    task_queue: str,
    every_s: float,
    summary: str,
) -> None:
    """Create (or keep up to date) the Schedule `schedule_id` that starts `workflow`
    every `every_s` seconds, each pass with `execution_timeout` 15 minutes."""
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            workflow,
            arg,
            id=workflow_id,
            task_queue=task_queue,
            execution_timeout=timedelta(minutes=15),
            static_summary=summary,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=every_s))]),
        # A pass due (or triggered) while one runs waits for it, once: a trigger is never
        # dropped, and passes never pile up.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.BUFFER_ONE),
    )
    try:
        await client.create_schedule(schedule_id, schedule)
        log.info("schedule created", schedule_id=schedule_id, every_s=every_s)
    except ScheduleAlreadyRunningError:

        def same_queue(update: ScheduleUpdateInput) -> ScheduleUpdate | None:
            """Keep the schedule's state (paused or not); and leave it alone entirely
            when it starts its passes on another task queue: a worker of another queue
            (a canary, a test's own worker) must not take the passes away from the fleet
            that polls it."""
            action = update.description.schedule.action
            if isinstance(action, ScheduleActionStartWorkflow) and action.task_queue != task_queue:
                log.info("schedule kept", schedule_id=schedule_id, starts_on=action.task_queue)
                return None
            schedule.state = update.description.schedule.state
            return ScheduleUpdate(schedule=schedule)

        try:
            await client.get_schedule_handle(schedule_id).update(same_queue)
        except RPCError as err:  # another worker updated it at the same moment
            log.info("schedule not updated", schedule_id=schedule_id, error=str(err))
