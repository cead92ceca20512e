"""Recovery when the worker running a chat is killed (`kill -9`) or stopped (SIGTERM).

Each repetition starts a chat with a long checkpoint phase through the gateway, on a
stack of 2 workers whose CHUNK_TARGET_CHARS is 32 (small chunks, many of them;
CHECKPOINT_WINDOW and every timeout as configured). Once some chunks are saved, the
worker running the chat (the one that took its latest workflow task, from the
history: the workflow's sticky holder, which also runs most of its activities) gets
`kill -9` or SIGTERM while the other worker stays alive. From the chunk rows in
PostgreSQL (`created_at`, compared with the kill time on the same clock):

- next chunk in order: the first chunk index not saved at the kill (what a reader
  following the answer waits for) — the figure checked against the goals;
- first chunk by a live worker: any chunk row written after the kill by another worker
  (often one that was already running there, so it says little on its own);
- first newly scheduled chunk: a chunk index that cannot have been scheduled before
  the kill (index ≥ chunks saved at the kill + window): the chat's workflow is moving
  again on the survivor;
- every chunk in flight at the kill saved (indices below that bound);
- longest stall: the longest time without any chunk row, from the kill until the
  chat is moving again (as tests/test_worker_crash.py measures it).

Baseline, in each repetition: the same kind of chat, not killed, with the same figures
taken from the moment it has the same number of chunks saved. Goals: after kill -9
the next chunk within 2 s; after SIGTERM within 1 s. Each repetition ends its chats
(terminate) and starts a replacement worker.

    .venv/bin/python -m bench.recovery --size full
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from typing import Any

import asyncpg
import httpx
from temporalio.api.enums.v1 import EventType, TimeoutType
from temporalio.client import Client, WorkflowHandle

from bench.figures import Figure, Report
from bench.runner import run_benchmark
from bench.stack import gateway_client, log
from bench.stats import summary
from common.contract import parse_identity
from common.settings import Settings
from testing.chats import start_chat
from testing.oracle import GATEWAY_MODEL, GATEWAY_TEMPERATURE, prompt_with_natural_length
from testing.stack import LocalStack

SIMULATOR_ENV = {"SIM_TTFT_MS": "20", "SIM_TOKENS_PER_SECOND": "5000"}
APP_ENV = {"CHUNK_TARGET_CHARS": "32"}  # the gateway builds each chat's request with it
SIZES = {
    "tiny": {"reps": 1, "max_tokens": 1000, "kill_after": 20, "observe_s": 0.0},
    "full": {"reps": 5, "max_tokens": 3000, "kill_after": 60, "observe_s": 4.0},
}
WAIT_AFTER_KILL_S = 20.0  # the longest a repetition watches the rows after the kill
NO_KILL = "no kill"
SIGNALS = {"kill -9": (signal.SIGKILL, 2.0), "SIGTERM": (signal.SIGTERM, 1.0)}


async def rows_of(db: asyncpg.Pool, workflow_id: str) -> list[tuple[int, str, float]]:
    rows = await db.fetch(
        """SELECT idx, worker, extract(epoch FROM created_at)::float8 AS at
           FROM chunks WHERE workflow_id = $1 ORDER BY at""",
        workflow_id,
    )
    return [(r["idx"], r["worker"], r["at"]) for r in rows]


async def workflow_holder(handle: WorkflowHandle[Any, Any]) -> str | None:
    """Identity of the worker that started the chat's latest workflow task."""
    holder = None
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            holder = event.workflow_task_started_event_attributes.identity
    return holder


async def timeouts_after(handle: WorkflowHandle[Any, Any], at: float) -> dict[str, int]:
    """What timed out or failed in the chat's history after `at` (why it stalled)."""
    counts: dict[str, int] = {}
    async for event in handle.fetch_history_events():
        when = event.event_time.seconds + event.event_time.nanos / 1e9
        name = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
        if when >= at and ("TIMED_OUT" in name or "FAILED" in name):
            if name == "ACTIVITY_TASK_TIMED_OUT":
                kind = event.activity_task_timed_out_event_attributes.failure.timeout_failure_info
                name += f" ({TimeoutType.Name(kind.timeout_type).removeprefix('TIMEOUT_TYPE_')})"
            elif name == "WORKFLOW_TASK_TIMED_OUT":
                kind = event.workflow_task_timed_out_event_attributes
                name += f" ({TimeoutType.Name(kind.timeout_type).removeprefix('TIMEOUT_TYPE_')})"
            counts[name] = counts.get(name, 0) + 1
    return counts


def next_in_order(rows: list[tuple[int, str, float]], at: float) -> float | None:
    """Seconds from `at` to the saving of the lowest chunk index not saved at `at`."""
    saved = {idx for idx, _, t in rows if t < at}
    missing = next(i for i in range(len(saved) + 1) if i not in saved)
    return next((t - at for idx, _, t in rows if idx == missing), None)


def recovery_figures(
    rows: list[tuple[int, str, float]], at: float, victim: str, window: int, total: int
) -> dict[str, float | None]:
    """The figures of one repetition, from the chunk rows and the kill time `at`."""
    before = [r for r in rows if r[2] < at]
    after = [r for r in rows if r[2] >= at]
    bound = min(total, len(before) + window)  # indices >= bound: scheduled after `at`
    saved = {idx for idx, _, _ in rows}
    in_flight = [i for i in range(bound) if i not in {idx for idx, _, _ in before}]
    times = [at, *(t for _, _, t in after)]
    return {
        "next_in_order_s": next_in_order(rows, at),
        "first_by_live_worker_s": next((t - at for _, w, t in after if w != victim), None),
        "first_newly_scheduled_s": next((t - at for idx, _, t in after if idx >= bound), None),
        "all_in_flight_saved_s": (
            max((t - at for idx, _, t in after if idx < bound), default=0.0)
            if all(i in saved for i in in_flight)
            else None
        ),
        "longest_stall_s": max((b - a for a, b in itertools.pairwise(times)), default=None),
        "chunks_before": len(before),
        "chunks_written_by_victim_after": sum(1 for _, w, _ in after if w == victim),
    }


async def one_stop(
    stack: LocalStack,
    client: Client,
    gateway: httpx.AsyncClient,
    db: asyncpg.Pool,
    how: str,
    max_tokens: int,
    kill_after: int,
    window: int,
    observe_s: float,
) -> dict[str, Any]:
    """One chat; once `kill_after` chunks are saved, stop the worker running it (`how`),
    or, for the baseline (`how` = "no kill"), only note the time; then watch the rows."""
    while len(stack.live_workers()) < 2:
        await asyncio.to_thread(stack.start_worker)
    # an answer long enough (600+ tokens, 120+ chunks of 32 characters) that the kill
    # after `kill_after` chunks always lands mid-checkpoint
    prompt, _ = prompt_with_natural_length(
        f"Recovery, {how}", GATEWAY_MODEL, at_least=600, temperature=GATEWAY_TEMPERATURE
    )
    workflow_id = await start_chat(gateway, prompt=prompt, max_tokens=max_tokens)
    handle = client.get_workflow_handle(workflow_id)
    deadline = time.monotonic() + 120
    while len(rows := await rows_of(db, handle.id)) < kill_after:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{handle.id}: {len(rows)} chunks saved after 120 s")
        await asyncio.sleep(0.02)
    holder = await workflow_holder(handle)
    latest_writer = rows[-1][1]
    identity = holder or latest_writer
    pid, _ = parse_identity(identity) or (None, "")
    victim = next((w for w in stack.live_workers() if w.pid == pid), None)
    if victim is None:
        raise RuntimeError(f"no live worker process for {identity}")
    at = time.time()
    stopping = None
    if how in SIGNALS:
        sig, _ = SIGNALS[how]
        stopping = asyncio.create_task(asyncio.to_thread(victim.kill, sig))
    total = await db.fetchval(
        "SELECT total_chunks FROM generations WHERE workflow_id = $1", handle.id
    )
    figures: dict[str, Any] = {}
    while time.time() < at + WAIT_AFTER_KILL_S:
        await asyncio.sleep(0.25)
        rows = await rows_of(db, handle.id)
        figures = recovery_figures(rows, at, identity, window, total)
        if len(rows) >= total or (
            time.time() >= at + observe_s and all(v is not None for v in figures.values())
        ):
            break
    if stopping is not None:
        await stopping
    figures["timeouts_after"] = await timeouts_after(handle, at)
    try:
        await handle.terminate("benchmark repetition measured")
    except Exception:  # it may have completed meanwhile
        pass
    figures.update(
        {
            "worker_running_the_chat": identity,
            "it_held_the_workflow": holder == identity,
            "it_wrote_the_latest_chunk": latest_writer == identity,
            "total_chunks": total,
        }
    )
    return figures


async def measure(stack: LocalStack, size: str) -> Report:
    reps, max_tokens, kill_after = (SIZES[size][k] for k in ("reps", "max_tokens", "kill_after"))
    observe_s = float(SIZES[size]["observe_s"])  # at least; the stall is measured over it
    window = Settings().checkpoint_window
    client = await Client.connect(stack.temporal_address)
    db = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=2)
    gateway = gateway_client(stack)
    runs: dict[str, list[dict[str, Any]]] = {how: [] for how in (NO_KILL, *SIGNALS)}
    try:
        for i in range(reps):
            for how in runs:
                run = await one_stop(
                    stack, client, gateway, db, how, max_tokens, kill_after, window, observe_s
                )
                runs[how].append(run)
                log(
                    f"  rep {i + 1}/{reps} {how}: next chunk in order "
                    f"{_ms(run['next_in_order_s'])}, longest stall "
                    f"{_ms(run['longest_stall_s'])}, first newly scheduled "
                    f"{_ms(run['first_newly_scheduled_s'])}"
                )
    finally:
        await gateway.aclose()
        await db.close()

    def values(how: str, key: str) -> list[float]:
        return [r[key] for r in runs[how] if r[key] is not None]

    def worst(how: str, key: str) -> float | None:
        got = values(how, key)
        return None if len(got) < len(runs[how]) else _round(max(got, default=None))

    def p50(how: str, key: str) -> float | None:
        return _round(summary(values(how, key), 1, 3)["p50"])

    figures: list[Figure] = []
    for how, (_, goal_s) in SIGNALS.items():
        nxt, stall = worst(how, "next_in_order_s"), worst(how, "longest_stall_s")
        figures += [
            Figure(
                f"{how} → next chunk in order saved, p50",
                p50(how, "next_in_order_s"),
                p50(NO_KILL, "next_in_order_s"),
                "s",
                f"≤ {goal_s:g} s",
                None
                if p50(how, "next_in_order_s") is None
                else (p50(how, "next_in_order_s") or 0) <= goal_s,
                "no kill, p50",
            ),
            Figure(
                f"{how} → next chunk in order saved, max of {reps}",
                nxt,
                worst(NO_KILL, "next_in_order_s"),
                "s",
                f"≤ {goal_s:g} s",
                None if nxt is None else nxt <= goal_s,
                "no kill, max",
            ),
            Figure(
                f"{how} → longest stall in chunk saving, max",
                stall,
                worst(NO_KILL, "longest_stall_s"),
                "s",
                f"≤ {goal_s:g} s",
                None if stall is None else stall <= goal_s,
                "no kill, max",
            ),
            Figure(
                f"{how} → first newly scheduled chunk saved, max",
                worst(how, "first_newly_scheduled_s"),
                worst(NO_KILL, "first_newly_scheduled_s"),
                "s",
                baseline_is="no kill, max",
            ),
        ]
    details: dict[str, Any] = {
        "repetitions": reps,
        "max_tokens": max_tokens,
        "chunk_target_chars": int(APP_ENV["CHUNK_TARGET_CHARS"]),
        "checkpoint_window": window,
        "stopped_after_chunks": kill_after,
        "observed_at_least_s": observe_s,
    }
    keys = (
        "next_in_order_s",
        "first_by_live_worker_s",
        "first_newly_scheduled_s",
        "all_in_flight_saved_s",
        "longest_stall_s",
    )
    for how in runs:
        details[how] = {key: summary(values(how, key), 1, 3) for key in keys}
        details[how]["runs"] = runs[how]
    return Report(
        "recovery",
        size,
        figures,
        "the same chat without a kill, observed from the same point (chunks saved)",
        details,
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value * 1000:.0f} ms"


def main(argv: list[str] | None = None) -> int:
    return run_benchmark("recovery", __doc__, SIMULATOR_ENV, measure, argv, app_env=APP_ENV)


if __name__ == "__main__":
    raise SystemExit(main())
