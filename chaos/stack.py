"""A local stack the chaos suite can break: `testing.stack.LocalStack` plus the
supervisor's part (kill a process, start it again on the same port and data).

Every process here was started by this stack and is stopped by its pid; nothing else
on the machine is touched. PostgreSQL is always the embedded one (the suite stops
it), whatever `DATABASE_URL` says.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from testing.keys import TEST_API_KEYS
from testing.keys import auth_headers as test_user_headers
from testing.stack import LocalStack, ManagedProcess, http_ok
from testing.workers import worker_process

# A slowish simulator, so that a fault lands while answers are being written.
CHAOS_SIMULATOR_ENV = {"SIM_TTFT_MS": "100", "SIM_TOKENS_PER_SECOND": "150"}
# Small chunks saved a few at a time: the checkpoint phase lasts long enough to be hit.
CHAOS_CHUNKING_ENV = {"CHUNK_TARGET_CHARS": "48", "CHECKPOINT_WINDOW": "4"}

CHAOS_USER = "chaos"


def access_env() -> dict[str, str]:
    """The gateway's access settings for a suite stack: auth on with the suite's own key,
    per-user limits out of the way (they have their own tests)."""
    return {
        "API_KEYS": f"{CHAOS_USER}:{TEST_API_KEYS[CHAOS_USER]}",
        "AUTH_ENABLED": "true",
        "RATE_LIMIT_PER_MINUTE": "1000000",
        "MAX_CONCURRENT_CHATS": "1000000",
    }


def auth_headers() -> dict[str, str]:
    return test_user_headers(CHAOS_USER)


_ENV_LOCK = threading.Lock()


@contextlib.contextmanager
def _own_postgres() -> Iterator[None]:
    """LocalStack uses the PostgreSQL named by DATABASE_URL when it is set; the suite must
    run (and stop) its own, so the variable is hidden while PostgreSQL is started."""
    with _ENV_LOCK:
        saved = os.environ.pop("DATABASE_URL", None)
        try:
            yield
        finally:
            if saved is not None:
                os.environ["DATABASE_URL"] = saved


@dataclass
class ChaosStack:
    """PostgreSQL, Temporal, the simulator, `workers` workers and a gateway, with
    restart helpers that reuse the same ports and data directories."""

    workdir: Path
    mode: str = "resume"
    workers: int = 2
    simulator_env: dict[str, str] = field(default_factory=lambda: dict(CHAOS_SIMULATOR_ENV))
    app_env: dict[str, str] = field(default_factory=lambda: dict(CHAOS_CHUNKING_ENV))
    local: LocalStack = field(init=False)
    restarts: list[dict[str, object]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.local = LocalStack(
            workdir=self.workdir,
            simulator_env=self.simulator_env,
            app_env={**self.app_env, **access_env(), "GENERATION_MODE": self.mode},
        )

    # --- life cycle ---------------------------------------------------------------------

    def start(self) -> ChaosStack:
        with _own_postgres():
            self.local.start(workers=self.workers)
        return self

    def stop(self) -> None:
        self.local.stop()

    @property
    def gateway_url(self) -> str:
        return self.local.gateway_url

    @property
    def simulator_url(self) -> str:
        return self.local.simulator_url

    @property
    def database_url(self) -> str:
        return self.local.database_url

    @property
    def temporal_address(self) -> str:
        return self.local.temporal_address

    def live_workers(self) -> list[ManagedProcess]:
        return self.local.live_workers()

    def worker_by_identity(self, identity: str) -> ManagedProcess | None:
        return worker_process(self.local, identity)

    # --- faults (blocking: call them through asyncio.to_thread) ------------------------

    def kill_gateway(self) -> float:
        assert self.local.gateway is not None
        at = time.time()
        self.local.gateway.kill()
        return at

    def kill_worker(self, worker: ManagedProcess) -> float:
        at = time.time()
        worker.kill()
        return at

    def stop_postgres(self, sig: int = signal.SIGQUIT) -> float:
        """SIGQUIT: PostgreSQL's immediate shutdown (every connection cut, crash recovery
        at the next start); SIGKILL: the postmaster dies alone, its backends follow."""
        assert self.local.postgres is not None
        at = time.time()
        self.local.postgres.kill(sig)
        return at

    def kill_temporal(self) -> float:
        assert self.local.temporal is not None
        at = time.time()
        self.local.temporal.kill()
        return at

    def kill_everything(self) -> float:
        """kill -9 of the gateway, every worker, Temporal and PostgreSQL, back to back
        (the simulator is the LLM provider, outside the system, and stays up)."""
        victims = [
            p
            for p in (self.local.gateway, *self.local.workers, self.local.temporal)
            if p is not None and p.alive()
        ]
        if self.local.postgres is not None and self.local.postgres.alive():
            victims.append(self.local.postgres)
        at = time.time()
        for process in victims:
            os.kill(process.pid, signal.SIGKILL)
        for process in victims:
            process.kill()  # reaps it
        return at

    # --- the supervisor's part ----------------------------------------------------------

    def restart_postgres(self, attempts: int = 30) -> None:
        """Start PostgreSQL again on the same port and data directory. After a kill -9
        of the postmaster its backends may hold the shared memory for a moment; retry."""
        with self._lock:
            for attempt in range(1, attempts + 1):
                try:
                    with _own_postgres():
                        self.local.start_postgres()
                    break
                except (RuntimeError, TimeoutError):
                    if attempt == attempts:
                        raise
                    time.sleep(0.5)
            self._note("postgres")

    def restart_temporal(self) -> None:
        with self._lock:
            self.local.start_temporal()  # same gRPC port and SQLite file
            self._note("temporal")

    def restart_gateway(self) -> None:
        with self._lock:
            self.local.start_gateway()  # same port: clients reconnect to the same URL
            self._note("gateway")

    def replace_workers(self) -> None:
        """Start workers until `workers` are alive (a supervisor replacing dead ones)."""
        while len(self.live_workers()) < self.workers:
            self.local.start_worker()
            self._note("worker")

    def restart_everything(self) -> None:
        """PostgreSQL and Temporal first, then the gateway and the workers side by side."""
        self.restart_postgres()
        self.restart_temporal()
        gateway = threading.Thread(target=self.restart_gateway)
        gateway.start()
        self.replace_workers()
        gateway.join()

    def ensure_healthy(self) -> list[str]:
        """Restart whatever is not running (between scenarios); return what was restarted."""
        restarted: list[str] = []
        if self.local.postgres is None or not self.local.postgres.alive():
            self.restart_postgres()
            restarted.append("postgres")
        if self.local.temporal is None or not self.local.temporal.alive():
            self.restart_temporal()
            restarted.append("temporal")
        if self.local.gateway is None or not self.local.gateway.alive():
            self.restart_gateway()
            restarted.append("gateway")
        if len(self.live_workers()) < self.workers:
            self.replace_workers()
            restarted.append("worker")
        deadline = time.monotonic() + 60
        while not http_ok(f"{self.gateway_url}/readyz"):
            if time.monotonic() > deadline:
                raise TimeoutError("the gateway is not ready after 60 s")
            time.sleep(0.2)
        return restarted

    def _note(self, what: str) -> None:
        self.restarts.append({"process": what, "ready_at": time.time()})
