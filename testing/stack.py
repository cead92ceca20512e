"""Start the stack's processes on free ports and stop them by pid: for tests, benchmarks,
chaos runs and capacity measurements.

`make up` supervises the same commands with circus; this harness starts them as
plain subprocesses so a test can kill one (`kill -9`), restart it, and clean up
everything it started, by pid, at the end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from devstack import local_llm
from devstack.stack import command, temporal_server_args
from testing.keys import TEST_API_KEYS

ROOT = Path(__file__).resolve().parent.parent


T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(predicate: Callable[[], T | None], timeout_s: float, what: str) -> T:
    """Poll `predicate` (blocking) until it returns a truthy value; return that value.
    For processes outside a LocalStack (`make up` in a test); async code: chats.wait_for."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"{what}: not within {timeout_s} s")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass
class ManagedProcess:
    """A subprocess with its own log file, stopped by pid."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.args,
            cwd=ROOT,
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: Ctrl-C of the test run does not hit it
        )
        log.close()
        return self

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait_until(self, ready: Callable[[], bool], timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
            if ready():
                return
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {timeout_s} s:\n{self.log_tail()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the process (kill -9 by default) and reap it."""
        if self.alive():
            os.kill(self.pid, sig)
            assert self.popen is not None
            self.popen.wait(timeout=30)

    def stop(self, timeout_s: float = 10) -> None:
        """SIGTERM, then SIGKILL after `timeout_s`; idempotent."""
        if not self.alive():
            return
        assert self.popen is not None
        self.popen.terminate()
        try:
            self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


@dataclass
class LocalStack:
    """PostgreSQL, Temporal, the simulator, workers and a gateway on free ports.

    Honours `DATABASE_URL` (an existing PostgreSQL; a fresh database is created in it).
    With `llm="local"`, `start()` runs llama-server (devstack.local_llm) instead of the
    simulator; `start_llama()` also adds it to a stack that has the simulator. Once
    llama-server runs, workers and gateways started afterwards use it.
    """

    workdir: Path
    simulator_env: dict[str, str] = field(default_factory=dict)
    app_env: dict[str, str] = field(default_factory=dict)
    processes: list[ManagedProcess] = field(default_factory=list)
    workers: list[ManagedProcess] = field(default_factory=list)
    database_url: str = ""
    temporal_address: str = ""
    simulator_url: str = ""
    gateway_url: str = ""
    postgres: ManagedProcess | None = None
    temporal: ManagedProcess | None = None
    gateway: ManagedProcess | None = None
    simulator: ManagedProcess | None = None
    llm: Literal["simulator", "local"] = "simulator"  # local: llama-server, no simulator
    llama_model_dir: Path | None = None  # None: the model package's cache directory
    llama: ManagedProcess | None = None
    llama_url: str = ""
    _llama_port: int = 0
    _postgres_port: int = 0
    _temporal_port: int = 0
    _gateway_port: int = 0

    # --- components -------------------------------------------------------------------

    def start_postgres(self) -> None:
        external = os.environ.get("DATABASE_URL")
        if external:
            base = external.rsplit("/", 1)[0]
            self.database_url = self.database_url or (
                f"{base}/durable_chat_test_{os.getpid()}_{free_port()}"
            )
            self.migrate()
            return
        self._postgres_port = self._postgres_port or free_port()
        self.postgres = self._spawn(
            "postgres",
            [*command("postgres"), str(self.workdir / "pgdata"), str(self._postgres_port)],
            {},
        )
        self.postgres.wait_until(lambda: port_open(self._postgres_port), timeout_s=60)
        self.database_url = f"postgresql://postgres@127.0.0.1:{self._postgres_port}/durable_chat"
        self.migrate()

    def migrate(self) -> None:
        """`python -m storage.migrate`, once, before any worker or gateway (as `make up`
        does): they wait for the schema, they never apply it."""
        done = subprocess.run(
            [*command("migrate"), "--wait", "60"],
            env={**os.environ, "DATABASE_URL": self.database_url, "LOG_FORMAT": "json"},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"the migrator failed: {(done.stdout + done.stderr)[-2000:]}")

    def start_temporal(self) -> None:
        self._temporal_port = self._temporal_port or free_port()
        args = temporal_server_args(self.workdir / "temporal.db", self._temporal_port, free_port())
        args += ["--headless", "--http-port", str(free_port()), "--metrics-port", str(free_port())]
        self.temporal = self._spawn("temporal", args, {})
        self.temporal.wait_until(lambda: port_open(self._temporal_port), timeout_s=60)
        self.temporal_address = f"127.0.0.1:{self._temporal_port}"

    def start_simulator(self) -> None:
        port = free_port()
        self.simulator = self._spawn(
            "simulator",
            command("simulator"),
            {"SIM_PORT": str(port), **self.simulator_env},
        )
        self.simulator.wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"))
        self.simulator_url = f"http://127.0.0.1:{port}"

    def start_llama(self, timeout_s: float = 120) -> ManagedProcess:
        """llama-server with the local model; ready when `/health` answers 200. Called
        again (after the previous one was stopped) it starts a new one on the same port."""
        self._llama_port = self._llama_port or free_port()
        url = f"http://127.0.0.1:{self._llama_port}"
        self.llama = self._spawn(
            "llama", local_llm.server_command(self._llama_port, self.llama_model_dir), {}
        )
        self.llama.wait_until(lambda: http_ok(f"{url}/health"), timeout_s=timeout_s)
        self.llama_url = url
        return self.llama

    def start_worker(self, extra_env: dict[str, str] | None = None) -> ManagedProcess:
        worker = self._spawn(
            f"worker-{len(self.workers) + 1}",
            command("worker"),
            {**self.env(), **(extra_env or {})},
        )
        self.workers.append(worker)
        worker.wait_until(lambda: "worker started" in worker.log_tail(400), timeout_s=60)
        return worker

    def start_extra_gateway(
        self, extra_env: dict[str, str], ready_path: str = "/readyz"
    ) -> tuple[ManagedProcess, str]:
        """Another gateway on the same stack, with its own settings (e.g. limits); it is
        waited for until `ready_path` answers (`/healthz` for one whose dependencies are
        meant to be missing)."""
        port = free_port()
        gateway = self._spawn(
            "gateway-extra",
            command("gateway"),
            {**self.env(), "GATEWAY_PORT": str(port), **extra_env},
        )
        url = f"http://127.0.0.1:{port}"
        gateway.wait_until(lambda: http_ok(f"{url}{ready_path}"), timeout_s=60)
        return gateway, url

    def start_gateway(self) -> None:
        self._gateway_port = self._gateway_port or free_port()
        self.gateway = self._spawn(
            "gateway",
            command("gateway"),
            {**self.env(), "GATEWAY_PORT": str(self._gateway_port)},
        )
        self.gateway_url = f"http://127.0.0.1:{self._gateway_port}"
        self.gateway.wait_until(lambda: http_ok(f"{self.gateway_url}/readyz"), timeout_s=60)

    def start(self, workers: int = 2) -> LocalStack:
        self.start_postgres()
        self.start_temporal()
        if self.llm == "local":
            self.start_llama()
        else:
            self.start_simulator()
        for _ in range(workers):
            self.start_worker()
        self.start_gateway()
        return self

    # --- helpers ----------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """Environment every application process of this stack gets."""
        return {
            "DATABASE_URL": self.database_url,
            "TEMPORAL_ADDRESS": self.temporal_address,
            "SIMULATOR_URL": f"{self.simulator_url}/v1",
            "OPENAI_API_KEY": "",
            "LOG_FORMAT": "json",
            "WORKER_METRICS_PORT": "0",  # several workers on one host: no fixed port
            "API_KEYS": ",".join(f"{user}:{key}" for user, key in TEST_API_KEYS.items()),
            # The suite starts many chats quickly; the limits have their own tests.
            "RATE_LIMIT_PER_MINUTE": "100000",
            "MAX_CONCURRENT_CHATS": "100000",
            **(local_llm.provider_env(f"{self.llama_url}/v1") if self.llama_url else {}),
            **self.app_env,
        }

    def live_workers(self) -> list[ManagedProcess]:
        return [w for w in self.workers if w.alive()]

    def stop(self) -> None:
        """Stop every process this stack started (gateway and workers first), by pid."""
        for process in reversed(self.processes):
            process.stop()

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> ManagedProcess:
        process = ManagedProcess(
            name, args, env, self.workdir / "logs" / f"{name}-{len(self.processes)}.log"
        ).start()
        self.processes.append(process)
        return process


@contextlib.contextmanager
def started(stack: LocalStack, workers: int = 2) -> Iterator[LocalStack]:
    """Start `stack` with `workers` workers; on a failure print each process's log tail;
    stop every process it started, by pid, on the way out."""
    try:
        stack.start(workers=workers)
        yield stack
    except BaseException:
        for process in stack.processes:
            print(f"--- {process.name} (pid {process.popen.pid if process.popen else '?'})")
            print(process.log_tail(60))
        raise
    finally:
        stack.stop()
