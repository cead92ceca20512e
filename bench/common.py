"""What every benchmark shares: a stack on free ports, the SSE reader, timing from
PostgreSQL, percentiles, process sampling, and the table + JSON report.

Every benchmark prints a table (figure | measured | baseline | goal | met?) and then
exactly one JSON line (the last line of its stdout) with the same figures, the
details behind them, the settings in force and the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil

from testing.stack import LocalStack

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
SIZES = ("tiny", "full")
TERMINAL_EVENTS = frozenset({"completed", "failed", "cancelled"})
# What the gateway sends to the simulator for a chat started with only a prompt and
# max_tokens (common.settings: the simulator's model name, temperature 0.7).
GATEWAY_MODEL = "simulator"
GATEWAY_TEMPERATURE = 0.7


# --- command line and stack ------------------------------------------------------------


def parse_args(description: str | None, argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(description or "").split("\n\n")[0])
    parser.add_argument(
        "--size",
        choices=SIZES,
        default="full",
        help="tiny: seconds, to check the script works (CI); full: the figures for the docs",
    )
    parser.add_argument("--json-out", type=Path, help="also write the JSON report to this file")
    parser.add_argument(
        "--keep-workdir", action="store_true", help="keep the stack's data and logs afterwards"
    )
    return parser.parse_args(argv)


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


def _harness_app_env(app_env: dict[str, str]) -> dict[str, str]:
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


def log(message: str) -> None:
    """Progress for people, on stderr (stdout carries the table and the JSON line)."""
    print(message, file=sys.stderr, flush=True)


def unique(prefix: str) -> str:
    return f"{prefix} [{uuid.uuid4().hex[:8]}]"


# --- numbers -----------------------------------------------------------------------------


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0 to 100) with linear interpolation; None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: list[float], scale: float = 1.0, digits: int = 1) -> dict[str, Any]:
    """n, min, p50, p95, max of `values` times `scale`, rounded."""

    def r(x: float | None) -> float | None:
        return None if x is None else round(x * scale, digits)

    return {
        "n": len(values),
        "min": r(min(values, default=None)),
        "p50": r(percentile(values, 50)),
        "p95": r(percentile(values, 95)),
        "max": r(max(values, default=None)),
    }


# --- the simulator's answers, computed ---------------------------------------------------


def simulated_text(prompt: str, max_tokens: int) -> str:
    """The simulator's answer to a chat started through the gateway with this prompt."""
    from llm_simulator.text import simulated_tokens

    messages = [{"role": "user", "content": prompt}]
    return "".join(simulated_tokens(messages, GATEWAY_MODEL, max_tokens, GATEWAY_TEMPERATURE))


def max_tokens_for_chunks(prompt: str, chunks: int, target_chars: int) -> tuple[int, int]:
    """A `max_tokens` whose simulated answer splits into exactly `chunks` chunks of
    `target_chars` (or as close as a search nearby finds); returns (max_tokens, chunks)."""
    from common.chunking import split_into_chunks

    estimate = max(1, round(chunks * target_chars / 6.6))  # the simulator: ~6.6 chars/token
    best = (estimate, -1)
    for delta in range(0, max(60, estimate // 2)):
        for candidate in {estimate - delta, estimate + delta}:
            if candidate < 1:
                continue
            got = len(split_into_chunks(simulated_text(prompt, candidate), target_chars))
            if got == chunks:
                return candidate, got
            if best[1] < 0 or abs(got - chunks) < abs(best[1] - chunks):
                best = (candidate, got)
    return best


def gateway_start_options() -> dict[str, Any]:
    """Options the gateway passes to `start_workflow` that change how a chat runs (for the
    chats a benchmark starts directly through the Temporal client, see api/chats.py)."""
    try:
        from common.contract import WORKFLOW_TASK_TIMEOUT as timeout
    except ImportError:  # a checkout from before common.contract
        from workflows import policies

        timeout = getattr(policies, "WORKFLOW_TASK_TIMEOUT", None)
    return {} if timeout is None else {"task_timeout": timeout}


async def chat_request_of(client: Any, workflow_id: str) -> Any:
    """The `ChatRequest` a chat was started with (its workflow input, from the history):
    what the gateway builds, with every field it sets."""
    from common.models import ChatRequest

    handle = client.get_workflow_handle(workflow_id)
    async for event in handle.fetch_history_events():
        payloads = event.workflow_execution_started_event_attributes.input.payloads
        values = await client.data_converter.decode(payloads, [ChatRequest])
        return values[0]
    raise LookupError(f"no history for {workflow_id}")


# --- gateway and SSE ---------------------------------------------------------------------


def gateway_client(stack: LocalStack, timeout_s: float = 60, **kwargs: Any) -> httpx.AsyncClient:
    """An HTTP client for the stack's gateway, with the harness's API key when the
    gateway asks for one (testing.keys.auth_headers)."""
    from testing import keys as harness

    auth = getattr(harness, "auth_headers", None)
    headers = auth() if callable(auth) else {}
    return httpx.AsyncClient(
        base_url=stack.gateway_url, timeout=timeout_s, headers=headers, **kwargs
    )


async def start_chat(gateway: httpx.AsyncClient, prompt: str, max_tokens: int) -> str:
    response = await gateway.post(
        "/api/workflows/start", json={"prompt": prompt, "max_tokens": max_tokens}
    )
    response.raise_for_status()
    workflow_id: str = response.json()["workflow_id"]
    return workflow_id


@dataclass
class SseEvent:
    id: int
    event: str
    data: Any
    at: float  # time.perf_counter() when its terminating blank line arrived
    wall: float  # time.time() at the same moment (to compare with PostgreSQL timestamps)


async def sse_events(
    client: httpx.AsyncClient, workflow_id: str, last_event_id: int | None = None
) -> AsyncIterator[SseEvent]:
    """The chat's SSE stream, event by event, each stamped on arrival. Use it inside
    `contextlib.aclosing(...)` so breaking out closes the connection at once."""
    headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
    async with client.stream(
        "GET", f"/api/workflows/{workflow_id}/events", headers=headers
    ) as response:
        response.raise_for_status()
        current: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line == "":
                if "event" in current:
                    yield SseEvent(
                        id=int(current.get("id", "0") or 0),
                        event=current["event"],
                        data=json.loads(current.get("data", "null")),
                        at=time.perf_counter(),
                        wall=time.time(),
                    )
                current = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                current[name] = value[1:] if value.startswith(" ") else value


# --- PostgreSQL ----------------------------------------------------------------------------


@dataclass
class Phase:
    """A chat's checkpoint phase, from PostgreSQL timestamps (epoch seconds).

    started: the `checkpointing` stage event (written when generation has ended);
    finished: the last chunk row; `chunks` rows saved out of `total`.
    """

    workflow_id: str
    stage: str
    started: float | None
    finished: float | None
    chunks: int
    total: int | None

    @property
    def seconds(self) -> float | None:
        if self.started is None or self.finished is None:
            return None
        return self.finished - self.started


async def checkpoint_phases(
    db: asyncpg.Pool | asyncpg.Connection, workflow_ids: list[str], schema: str = "public"
) -> dict[str, Phase]:
    rows = await db.fetch(
        f"""
        SELECT g.workflow_id, g.stage, g.total_chunks,
               (SELECT extract(epoch FROM e.created_at)::float8 FROM {schema}.chat_events e
                 WHERE e.workflow_id = g.workflow_id AND e.type = 'stage'
                   AND e.data->>'stage' = 'checkpointing'
                 ORDER BY e.seq LIMIT 1) AS started,
               (SELECT extract(epoch FROM max(c.created_at))::float8 FROM {schema}.chunks c
                 WHERE c.workflow_id = g.workflow_id) AS finished,
               (SELECT count(*) FROM {schema}.chunks c WHERE c.workflow_id = g.workflow_id)
                 AS chunks
        FROM {schema}.generations g WHERE g.workflow_id = ANY($1::text[])
        """,
        workflow_ids,
    )
    return {
        r["workflow_id"]: Phase(
            r["workflow_id"],
            r["stage"],
            r["started"],
            r["finished"],
            r["chunks"],
            r["total_chunks"],
        )
        for r in rows
    }


async def wait_finished(
    db: asyncpg.Pool,
    workflow_ids: list[str],
    timeout_s: float,
    schema: str = "public",
    interval_s: float = 0.25,
) -> None:
    """Wait until every chat's generation row is in a final stage."""
    deadline = time.monotonic() + timeout_s
    while True:
        done = await db.fetchval(
            f"""SELECT count(*) FROM {schema}.generations
                WHERE workflow_id = ANY($1::text[])
                  AND stage IN ('completed', 'failed', 'cancelled')""",
            workflow_ids,
        )
        if done >= len(workflow_ids):
            failed = await db.fetch(
                f"""SELECT workflow_id, stage, error FROM {schema}.generations
                    WHERE workflow_id = ANY($1::text[]) AND stage <> 'completed'""",
                workflow_ids,
            )
            if failed:
                raise RuntimeError(f"chats did not complete: {[dict(r) for r in failed][:3]}")
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{done}/{len(workflow_ids)} chats finished after {timeout_s} s")
        await asyncio.sleep(interval_s)


# --- processes -----------------------------------------------------------------------------


class ProcessSampler:
    """Samples, on a thread, the resident memory of some processes and the CPU time of
    their process trees (PostgreSQL backends included, even short-lived ones).

    `roots()` names the processes to watch (name -> pid), asked at every sample.
    """

    def __init__(self, roots: Callable[[], dict[str, int]], interval_s: float = 0.2) -> None:
        self._roots = roots
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peak_rss: dict[str, int] = {}
        self.peak_rss_total: dict[str, int] = {}  # by name prefix, e.g. "worker"
        self._cpu_start: dict[int, float] = {}
        self._cpu_last: dict[tuple[str, int], float] = {}
        self.samples = 0

    def __enter__(self) -> ProcessSampler:
        for name, pid in self._roots().items():
            for proc, cpu in _tree_cpu(pid):
                self._cpu_start[proc] = cpu
                self._cpu_last[(name, proc)] = cpu
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._sample()

    def _sample(self) -> None:
        totals: dict[str, int] = {}
        for name, pid in self._roots().items():
            try:
                rss = psutil.Process(pid).memory_info().rss
            except psutil.Error:
                rss = 0
            self.peak_rss[name] = max(self.peak_rss.get(name, 0), rss)
            group = name.split("-", 1)[0]
            totals[group] = totals.get(group, 0) + rss
            for proc, cpu in _tree_cpu(pid):
                self._cpu_last[(name, proc)] = cpu
        for group, total in totals.items():
            self.peak_rss_total[group] = max(self.peak_rss_total.get(group, 0), total)
        self.samples += 1

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds used by each named tree while sampled (processes that exited
        between two samples lose their last interval)."""
        used: dict[str, float] = {}
        for (name, proc), cpu in self._cpu_last.items():
            used[name] = used.get(name, 0.0) + cpu - self._cpu_start.get(proc, 0.0)
        return {name: round(value, 1) for name, value in used.items()}

    def peak_mib(self, name: str) -> float:
        return round(self.peak_rss.get(name, 0) / 2**20, 1)

    def peak_total_mib(self, group: str) -> float:
        return round(self.peak_rss_total.get(group, 0) / 2**20, 1)


def _tree_cpu(pid: int) -> list[tuple[int, float]]:
    """(pid, user + system CPU seconds) of a process and its descendants."""
    try:
        root = psutil.Process(pid)
        family = [root, *root.children(recursive=True)]
    except psutil.Error:
        return []
    found = []
    for proc in family:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        found.append((proc.pid, times.user + times.system))
    return found


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


def pid_of(worker_identity: str) -> int:
    """`worker-<pid>@<host>` -> pid."""
    return int(worker_identity.removeprefix("worker-").split("@", 1)[0])


# --- settings and machine -------------------------------------------------------------------


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


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _run(args: list[str]) -> str:
    try:
        return subprocess.run(
            args, capture_output=True, text=True, check=False, cwd=ROOT, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info() -> dict[str, Any]:
    free = _run(["free", "-h"]).splitlines()
    memory = next((line.split()[1] for line in free if line.startswith("Mem:")), "?")
    # read-only git calls; --no-optional-locks: never take the index lock others may need
    dirty = _run(["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_total": memory,
        "free_h": free,
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "kernel": platform.release(),
        "git_head": _run(["git", "rev-parse", "--short", "HEAD"]),
        "git_tracked_changes": bool(dirty),
    }


# --- report ----------------------------------------------------------------------------------


@dataclass
class Figure:
    """One row of a benchmark's table."""

    figure: str
    measured: float | None
    baseline: float | None
    unit: str
    goal: str = "—"
    met: bool | None = None
    baseline_is: str = ""


@dataclass
class Report:
    benchmark: str
    size: str
    figures: list[Figure]
    baseline: str
    details: dict[str, Any] = field(default_factory=dict)
    simulator_env: dict[str, str] = field(default_factory=dict)
    contention: dict[str, Any] = field(default_factory=dict)
    git_head_at_start: str = ""

    def to_json(self, started_at: datetime, load_before: list[float]) -> dict[str, Any]:
        machine = machine_info()
        machine["loadavg_before_1_5_15"] = load_before
        machine["git_head_at_start"] = self.git_head_at_start
        return {
            "benchmark": self.benchmark,
            "size": self.size,
            "date": started_at.isoformat(timespec="seconds"),
            "command": f"{Path(sys.executable).name} -m bench.{self.benchmark} --size {self.size}",
            "baseline": self.baseline,
            "figures": [asdict(f) for f in self.figures],
            "details": self.details,
            "settings": settings_in_force(),
            "simulator_env": self.simulator_env,
            "contention": self.contention,
            "machine": machine,
        }


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit in ("ms", "MiB", "/s", "ms/chunk"):
        return f"{value:,.1f} {unit}"
    if unit == "s":
        return f"{value:,.2f} s"
    if unit == "x":
        return f"{value:.3f}x"
    return f"{value:g} {unit}".strip()


def table(figures: list[Figure]) -> str:
    header = ("figure", "measured", "baseline", "goal", "met?")
    rows = [
        (
            f.figure,
            fmt(f.measured, f.unit),
            fmt(f.baseline, f.unit),
            f.goal,
            {True: "yes", False: "NO", None: "—"}[f.met],
        )
        for f in figures
    ]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        " | ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)),
        "-+-".join("-" * w for w in widths),
    ]
    lines += [" | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def emit(report: Report, started_at: datetime, load_before: list[float], out: Path | None) -> None:
    """Print the table, then the JSON report as the last line of stdout."""
    document = report.to_json(started_at, load_before)
    print(f"\n== {report.benchmark} ({report.size}) — baseline: {report.baseline}")
    print(table(report.figures))
    others = report.contention.get("other_work_share_of_machine", 0.0)
    if others >= 0.2:
        print(
            f"note: other work used {others:.0%} of the machine's CPU during the measurement "
            f"(load average {document['machine']['loadavg_1_5_15'][0]}): figures are noisy"
        )
    print(json.dumps(document, ensure_ascii=False), flush=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def _busy_core_seconds() -> float:
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def _contention(wall_s: float, busy_s: float, own: ProcessSampler) -> dict[str, Any]:
    """How much of the machine this benchmark had: CPU used by everything during the
    measurement, and by this benchmark's own processes (bench, stack, children)."""
    cores = os.cpu_count() or 1
    ours = sum(own.cpu_seconds().values())
    return {
        "wall_s": round(wall_s, 1),
        "cores": cores,
        "machine_busy_core_s": round(busy_s, 1),
        "this_benchmark_core_s": round(ours, 1),
        "other_work_core_s": round(max(0.0, busy_s - ours), 1),
        "other_work_share_of_machine": round(max(0.0, busy_s - ours) / (wall_s * cores), 2),
    }


def now_utc() -> datetime:
    return datetime.now(UTC)


def run_benchmark(
    name: str,
    doc: str | None,
    simulator_env: dict[str, str],
    measure: Callable[[LocalStack, str], Any],
    argv: list[str] | None = None,
    workers: int = 2,
    app_env: dict[str, str] | None = None,
) -> int:
    """The `main` of every benchmark: parse --size, start a stack, measure, report."""
    args = parse_args(doc, argv)
    stop_on_signals()
    # The stack's application settings, also for this process's Settings() (the stack's
    # processes get this environment plus the harness's and `app_env`).
    os.environ.update(_harness_app_env(app_env or {}))
    started_at = now_utc()
    load_before = [round(x, 2) for x in os.getloadavg()]
    git_head = _run(["git", "rev-parse", "--short", "HEAD"])
    log(f"{name}: starting a stack ({workers} workers) …")
    clock = time.monotonic()
    with running_stack(
        simulator_env, workers=workers, app_env=app_env, keep_workdir=args.keep_workdir
    ) as stack:
        log(f"{name}: stack up in {time.monotonic() - clock:.1f} s; measuring ({args.size}) …")
        clock = time.monotonic()
        machine_before = _busy_core_seconds()
        with ProcessSampler(lambda: {"this benchmark": os.getpid()}, interval_s=0.5) as own:
            report: Report = asyncio.run(measure(stack, args.size))
        wall = time.monotonic() - clock
        report.contention = _contention(wall, _busy_core_seconds() - machine_before, own)
        log(f"{name}: measured in {wall:.1f} s; stopping the stack …")
        clock = time.monotonic()
    log(f"{name}: stack stopped in {time.monotonic() - clock:.1f} s")
    report.simulator_env = {**simulator_env, **(app_env or {})}
    report.git_head_at_start = git_head
    emit(report, started_at, load_before, args.json_out)
    return 0


def percentile_ms(seconds: list[float], q: float) -> float:
    """The q-th percentile (0 to 100) of durations in seconds, in milliseconds rounded to
    0.1 ms, for a figure; `seconds` must not be empty."""
    value = percentile(seconds, q)
    assert value is not None
    return round(value * 1000, 1)
