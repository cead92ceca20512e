"""The settings in force when a figure was measured (the machine they ran on: testing.machine)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any


def settings_in_force() -> dict[str, Any]:
    """The values behind the figures, read from the code and environment of this run."""
    values: dict[str, Any] = {}

    def read(name: str, get: Callable[[], Any]) -> None:
        try:
            value = get()
        except Exception as err:  # a renamed constant must not break the benchmark
            value = f"unavailable ({type(err).__name__})"
        if hasattr(value, "total_seconds"):
            value = value.total_seconds()
        values[name] = value

    from common.settings import Settings

    settings = Settings()
    read("CHECKPOINT_WINDOW", lambda: settings.checkpoint_window)
    read("CHUNK_TARGET_CHARS", lambda: settings.chunk_target_chars)
    read("WORKER_MAX_CONCURRENT_ACTIVITIES", lambda: settings.worker_max_concurrent_activities)
    read(
        "WORKER_MAX_CONCURRENT_WORKFLOW_TASKS",
        lambda: settings.worker_max_concurrent_workflow_tasks,
    )
    read("STATUS_QUERY_TIMEOUT_S", lambda: settings.status_query_timeout_s)
    read("CACHE_ENABLED", lambda: settings.cache_enabled)
    read("GENERATION_MODE (effective)", lambda: settings.requested_generation_mode.value)
    for name in ("AUTH_ENABLED", "RATE_LIMIT_PER_MINUTE", "MAX_CONCURRENT_CHATS"):
        if name in os.environ:  # the harness sets these for its stacks
            values[name] = os.environ[name]

    from workflows import policies

    read("policies.SAVE_CHUNK_TIMEOUT_s", lambda: policies.SAVE_CHUNK_TIMEOUT)
    read(
        "policies.SAVE_CHUNK_RETRY.initial_interval_s",
        lambda: policies.SAVE_CHUNK_RETRY.initial_interval,
    )
    read("policies.RECORD_TIMEOUT_s", lambda: policies.RECORD_TIMEOUT)
    read("policies.GENERATE_HEARTBEAT_TIMEOUT_s", lambda: policies.GENERATE_HEARTBEAT_TIMEOUT)

    from common import contract

    read("contract.WORKFLOW_TASK_TIMEOUT_s", lambda: contract.WORKFLOW_TASK_TIMEOUT)
    read("contract.STICKY_SCHEDULE_TO_START_s", lambda: contract.STICKY_SCHEDULE_TO_START)
    read("contract.GRACEFUL_SHUTDOWN_s", lambda: contract.GRACEFUL_SHUTDOWN)

    from activities import drafts

    read("drafts.FLUSH_INTERVAL_S", lambda: drafts.FLUSH_INTERVAL_S)

    from api import events

    read("api.events.FALLBACK_POLL_S", lambda: events.FALLBACK_POLL_S)
    return values
