"""The benchmark's stack: started on free ports, stopped by pid (also on Ctrl-C and
SIGTERM), its processes and logs, a gateway client; progress on stderr."""

from __future__ import annotations

import contextlib
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from testing.keys import auth_headers
from testing.stack import LocalStack


def log(message: str) -> None:
    """Progress for people, on stderr (stdout carries the table and the JSON line)."""
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def running_stack(
    simulator_env: dict[str, str],
    *,
    workers: int = 2,
    app_env: dict[str, str] | None = None,
    keep_workdir: bool = False,
) -> Iterator[LocalStack]:
    """PostgreSQL, Temporal dev server, simulator, `workers` workers and a gateway on free
    ports; every process is stopped by pid on the way out (also on Ctrl-C)."""
    workdir = Path(tempfile.mkdtemp(prefix="durable-chat-bench-"))
    stack = LocalStack(workdir=workdir, simulator_env=simulator_env, app_env=app_env or {})
    failed = False
    try:
        _start(stack, workers)
        yield stack
    except KeyboardInterrupt:
        log("interrupted: stopping the stack")
        raise
    except BaseException:
        failed = True
        for process in stack.processes:
            log(f"--- {process.name} (pid {process.popen.pid if process.popen else '?'})")
            log(process.log_tail(30))
        raise
    finally:
        _stop(stack)
        if keep_workdir or failed:
            log(f"stack data and logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _start(stack: LocalStack, workers: int) -> None:
    """LocalStack.start, with the gateway started while the workers start."""
    stack.start_postgres()
    stack.start_temporal()
    stack.start_simulator()
    errors: list[BaseException] = []

    def gateway() -> None:
        try:
            stack.start_gateway()
        except BaseException as err:
            errors.append(err)

    thread = threading.Thread(target=gateway)
    thread.start()
    try:
        for _ in range(workers):
            stack.start_worker()
    finally:
        thread.join()
    if errors:
        raise errors[0]


def _stop(stack: LocalStack) -> None:
    """Stop every process the stack started, by pid (SIGTERM, then SIGKILL after 10 s):
    gateway, workers and simulator together, then Temporal and PostgreSQL together."""
    backends = {id(p) for p in (stack.temporal, stack.postgres) if p is not None}
    for group in (
        [p for p in stack.processes if id(p) not in backends],
        [p for p in stack.processes if id(p) in backends],
    ):
        threads = [threading.Thread(target=p.stop) for p in group]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def harness_app_env(app_env: dict[str, str]) -> dict[str, str]:
    """The settings the harness gives every application process (its `env()` without
    addresses and secrets), plus `app_env`."""
    probe = LocalStack(workdir=Path(tempfile.gettempdir()), app_env=app_env)
    skip = {"DATABASE_URL", "TEMPORAL_ADDRESS", "SIMULATOR_URL", "OPENAI_API_KEY", "API_KEYS"}
    return {k: v for k, v in probe.env().items() if k not in skip}


def stop_on_signals() -> None:
    """SIGTERM and SIGINT raise KeyboardInterrupt, so the stack is stopped on the way out
    (also when started in the background, where SIGINT is otherwise ignored)."""

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)


def gateway_client(stack: LocalStack, timeout_s: float = 60, **kwargs: Any) -> httpx.AsyncClient:
    """An HTTP client for the stack's gateway, as the test user (testing.keys)."""
    return httpx.AsyncClient(
        base_url=stack.gateway_url, timeout=timeout_s, headers=auth_headers(), **kwargs
    )


def stack_processes(stack: LocalStack) -> dict[str, int]:
    """name -> pid of the stack's live processes (workers as worker-1, worker-2, ...)."""
    return {p.name: p.pid for p in stack.processes if p.alive()}


def replays_logged(stack: LocalStack) -> int:
    """How many times a worker took over a chat by replaying its history (it logs
    "replayed history; resuming at …" once per takeover, see workflows/chat.py)."""
    total = 0
    for worker in stack.workers:
        try:
            total += worker.log_path.read_text(errors="replace").count("replayed history")
        except OSError:
            continue
    return total
