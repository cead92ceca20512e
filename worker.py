"""One durable-chat worker: polls `chat-queue` and runs chats and their activities.

Run several (`make up` starts `WORKERS` of them) to form a fleet: killing one
mid-answer lets another replay the chat's history and continue at the next chunk.
The worker identity contains the pid, so a chunk row says which process wrote it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

import structlog
from temporalio import workflow
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    Worker,
)

from activities.cache import CacheActivities
from activities.checkpoints import CheckpointActivities
from activities.generation import GenerationActivities
from activities.provider import ProviderLimits
from activities.reconcile import ReconcileActivities, ensure_reconcile_schedule
from activities.retention import RetentionActivities, ensure_retention_schedule
from activities.validation import validate_prompt
from common.closes import current_run_id, run_state
from common.contract import (
    ACTIVITY_TASK_POLLS,
    GRACEFUL_SHUTDOWN,
    MAX_HEARTBEAT_THROTTLE,
    STICKY_SCHEDULE_TO_START,
    worker_identity,
)
from common.llm import ResumeUnsupportedError, build_llm_client, decide_generation_mode
from common.log import configure_logging
from common.settings import get_settings
from common.temporal import connect_temporal
from storage import (
    AnswerCacheStore,
    ChatStore,
    LlmCallStore,
    ResponseStore,
    create_pool,
    wait_for_schema,
)
from workflows.chat import ChatStreamingWorkflow
from workflows.reconcile import ReconcileChatsWorkflow
from workflows.retention import PurgeExpiredResponsesWorkflow

log = structlog.get_logger("worker")


class _BindActivityContext(Interceptor):
    """Binds workflow id, activity, attempt and worker to every log line of an activity."""

    def __init__(self, worker_identity: str) -> None:
        self._worker = worker_identity

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ActivityContext(next, self._worker)


class _ActivityContext(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, worker_identity: str) -> None:
        super().__init__(next)
        self._worker = worker_identity

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        from temporalio import activity

        info = activity.info()
        with structlog.contextvars.bound_contextvars(
            workflow_id=info.workflow_id,
            run_id=info.workflow_run_id,
            activity=info.activity_type,
            attempt=info.attempt,
            worker=self._worker,
        ):
            return await super().execute_activity(input)


def _metrics_port(base: int, index: int) -> int:
    return base + index - 1 if base else 0


def _runtime_with_metrics(host: str, port: int) -> Runtime:
    """A Temporal runtime exporting the SDK's metrics and ours (workflow.metric_meter) on
    host:port (127.0.0.1 unless WORKER_METRICS_HOST says otherwise)."""
    return Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(bind_address=f"{host}:{port}"),
            global_tags={"service": "durable-chat-worker"},
        )
    )


async def run_worker(index: int = 1) -> None:
    settings = get_settings()
    identity = worker_identity()
    # Workflow log lines carry the workflow id as flat keys (see common.log), not in the text.
    workflow.logger.workflow_info_on_message = False

    # The schema is the migrator's (python -m storage.migrate, run before the workers).
    await wait_for_schema(settings.database_url)
    pool = await create_pool(settings.database_url, max_size=20)
    metrics_port = _metrics_port(settings.worker_metrics_port, index)
    client = await connect_temporal(
        settings.temporal_address,
        settings.temporal_namespace,
        runtime=(
            _runtime_with_metrics(settings.worker_metrics_host, metrics_port)
            if metrics_port
            else None
        ),
        data_converter=settings.temporal_data_converter(),
    )
    llm = build_llm_client(settings)
    try:
        decision = await decide_generation_mode(settings, llm)
    except ResumeUnsupportedError as err:
        log.error("worker cannot start", reason=str(err))
        raise SystemExit(2) from None
    log.info(
        "generation mode decided",
        mode=decision.mode.value,
        reason=decision.reason,
        requested=settings.generation_mode,
        endpoint=settings.llm_base_url or "OpenAI",
    )

    prices = settings.prices

    async def current_run(workflow_id: str) -> str | None:
        return await current_run_id(client, workflow_id)

    async def is_running(workflow_id: str) -> bool:
        return (await run_state(client, workflow_id)).running

    # Run-aware: a write from a run other than the chat's current one asks Temporal.
    chats = ChatStore(pool, current_run=current_run)
    checkpoints = CheckpointActivities(chats, identity, prices)
    cache = CacheActivities(
        AnswerCacheStore(pool), chats, prices, is_running, scope=settings.cache_scope
    )
    reconcile = ReconcileActivities(
        client, chats, AnswerCacheStore(pool), LlmCallStore(pool), prices, llm
    )
    retention = RetentionActivities(ResponseStore(pool))
    generation = GenerationActivities(
        llm,
        chats,
        LlmCallStore(pool),
        prices,
        ProviderLimits(
            idle_timeout_s=settings.llm_stream_idle_timeout_s,
            queued_timeout_s=settings.llm_queued_timeout_s,
            outage_tolerance_s=settings.llm_outage_tolerance_s,
        ),
        decision.mode,
    )
    worker = Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[ChatStreamingWorkflow, ReconcileChatsWorkflow, PurgeExpiredResponsesWorkflow],
        activities=[
            validate_prompt,
            generation.generate_full_text,
            checkpoints.save_chunk,
            checkpoints.record_generation,
            generation.collect_shown_answer,
            cache.claim_or_reuse_answer,
            cache.remember_answer,
            cache.release_answer_claim,
            reconcile.reconcile_chats,
            retention.purge_expired_responses,
        ],
        identity=identity,
        interceptors=[_BindActivityContext(identity)],
        max_concurrent_activities=settings.worker_max_concurrent_activities,
        max_concurrent_workflow_tasks=settings.worker_max_concurrent_workflow_tasks,
        max_concurrent_activity_task_polls=ACTIVITY_TASK_POLLS,
        sticky_queue_schedule_to_start_timeout=STICKY_SCHEDULE_TO_START,
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
        max_heartbeat_throttle_interval=MAX_HEARTBEAT_THROTTLE,
    )

    if settings.reconcile_interval_s > 0:
        await ensure_reconcile_schedule(client, settings.task_queue, settings.reconcile_interval_s)
    if settings.responses_sweep_interval_s > 0:
        await ensure_retention_schedule(
            client, settings.task_queue, settings.responses_sweep_interval_s
        )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    log.info(
        "worker started",
        task_queue=settings.task_queue,
        temporal=settings.temporal_address,
        llm=settings.provider_name,
        generation_mode=decision.mode.value,
        pid=os.getpid(),
        metrics=f"http://127.0.0.1:{metrics_port}/metrics" if metrics_port else "off",
    )
    async with worker:
        await stop.wait()
        log.info("worker stopping: finishing in-flight activities")
    await pool.close()
    await llm.close()
    log.info("worker stopped")


def main() -> None:
    # Temporal's workflow sandbox imports the workflow modules again for every workflow
    # run; without bytecode on disk each run compiles them anew (about 9 ms of CPU per
    # chat, measured with py-spy under bench.load), so this process writes .pyc files
    # even where PYTHONDONTWRITEBYTECODE is set (read-only trees: the image compiles).
    sys.dont_write_bytecode = False
    parser = argparse.ArgumentParser(description="Run one durable-chat worker.")
    parser.add_argument(
        "--index", type=int, default=1, help="position in a fleet (1-based; picks the metrics port)"
    )
    args = parser.parse_args()
    configure_logging("worker", worker=worker_identity())
    try:
        get_settings().check_models()
    except ValueError as err:  # a configuration a person must fix: say so, exit 2
        log.error("worker cannot start", error=str(err))
        raise SystemExit(2) from err
    asyncio.run(run_worker(args.index))


if __name__ == "__main__":
    main()
