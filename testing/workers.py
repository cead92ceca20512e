"""Workers of a stack: one on a task queue of its own; a worker identity to a pid."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from common.contract import parse_identity
from testing.stack import LocalStack, ManagedProcess


@contextlib.contextmanager
def own_worker(stack: Any, env: dict[str, str]) -> Iterator[str]:
    """A worker of the stack on a task queue of its own, with `env`; yields the queue.
    Stopped (by pid) on leaving, so the suite's fleet is as it was."""
    queue = f"own-{time.monotonic_ns()}"
    worker = stack.start_worker({"TASK_QUEUE": queue, **env})
    try:
        yield queue
    finally:
        worker.stop()


def worker_process(stack: LocalStack, identity: str) -> ManagedProcess | None:
    """The live worker of `stack` whose Temporal identity (`worker-<pid>@<host>`) is
    `identity`; None when it is not one of the stack's live workers."""
    parsed = parse_identity(identity)
    if parsed is None:
        return None
    return next((w for w in stack.live_workers() if w.pid == parsed[0]), None)
