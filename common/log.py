"""Logging setup: structlog for our code, the same renderer for the stdlib loggers.

Logs go to stdout: JSON lines when stdout is not a terminal, coloured console
lines when it is. Context such as `workflow_id`, `activity`, `attempt` and
`worker` is bound once through `structlog.contextvars` and appears on every
line logged while it is bound (including Temporal's own `workflow.logger`).
"""

from __future__ import annotations

import logging
import os
import sys

import structlog


def _lift_temporal_context(
    _: object, __: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    """Turn the Temporal SDK's `temporal_workflow`/`temporal_activity` extras into flat keys."""
    for key in ("temporal_workflow", "temporal_activity"):
        info = event.pop(key, None)
        if isinstance(info, dict):
            for name in ("workflow_id", "run_id", "workflow_type", "activity_type", "attempt"):
                if name in info:
                    event.setdefault(name, info[name])
    return event


class _StaticFields:
    """Adds fields fixed for the whole process (service, worker identity) to every line,
    including lines logged from threads that do not share our contextvars (workflows)."""

    def __init__(self) -> None:
        self.fields: dict[str, object] = {}

    def __call__(
        self, _: object, __: str, event: structlog.types.EventDict
    ) -> structlog.types.EventDict:
        for key, value in self.fields.items():
            event.setdefault(key, value)
        return event


_STATIC = _StaticFields()

_SHARED_PROCESSORS: list[structlog.types.Processor] = [
    structlog.contextvars.merge_contextvars,
    _STATIC,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def configure_logging(service: str, level: str | None = None, **static_fields: object) -> None:
    """Route structlog and stdlib logging to stdout for the process named `service`.

    `static_fields` (e.g. `worker="worker-42@host"`) are added to every line.
    `LOG_LEVEL` (default INFO) sets the level; `LOG_FORMAT=json|console` overrides
    the terminal detection.
    """
    level_name = (level or os.environ.get("LOG_LEVEL", "INFO")).upper()
    fmt = os.environ.get("LOG_FORMAT") or ("console" if sys.stdout.isatty() else "json")
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer(colors=True)
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )

    structlog.configure(
        processors=[
            *_SHARED_PROCESSORS,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            *_SHARED_PROCESSORS,
            structlog.stdlib.ExtraAdder(),
            _lift_temporal_context,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level_name)
    for noisy in ("httpx", "httpcore", "openai", "uvicorn.access", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    _STATIC.fields = {"service": service, **static_fields}
