"""Workers of a stack: one on a task queue of its own; a worker identity to a pid."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any


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
