"""The scenario runner: N chats, one fault at a random moment, recovery, verification.

For each scenario:

1. N chats are started through the gateway (unique prompts, answer lengths drawn from
   the seeded RNG, starts spread over `stagger_s`), each with an idempotency key so a
   start retried across a fault never creates a second chat; every chat is followed by
   a `ChatFollower` that reconnects with `Last-Event-ID` whenever its stream drops.
2. The moment of the fault is drawn from the RNG: a target chat, a phase (generating or
   checkpointing, unless the scenario fixes it) and a fraction of that phase (preview
   characters or chunks received by the target's follower). When the target gets
   there, the fault is injected; what was killed is restarted by the harness, as a
   supervisor would (same ports, same data directories).
3. When every follower has its terminal event (or the deadline passes), each chat is
   verified from three sources: PostgreSQL (chunk rows 0..total-1 exactly once, their
   text equal to the simulator's answer, the event log), the simulator (`/sim/stats`:
   generations started per prompt) and the client (SSE transcript: every event of the
   log exactly once and in order, checkpointed text, preview text; and the chunks read
   by cursor through the REST API).

Recovery time of a chat: from the fault to the first event its client received that
was written after the fault (progress resumed, as the user sees it); worst over the
chats that were not finished when the fault hit.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import httpx
from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.client import Client

from chaos.client import (
    ChatFollower,
    Received,
    StartFailedError,
    get_status,
    read_chunks_by_cursor,
    start_chat,
)
from chaos.stack import ChaosStack, auth_headers
from llm_simulator.text import SimulatedReply, simulated_reply

# What the gateway sends the simulator for a chat started with a prompt and max_tokens.
GATEWAY_MODEL = "simulator"
GATEWAY_TEMPERATURE = 0.7
PHASES = ("generating", "checkpointing")


def expected_reply(prompt: str, max_tokens: int) -> SimulatedReply:
    """The simulator's reply to this chat (tokens, how it ends), computed without asking it."""
    messages = [{"role": "user", "content": prompt}]
    return simulated_reply(messages, GATEWAY_MODEL, max_tokens, GATEWAY_TEMPERATURE)


def expected_answer(prompt: str, max_tokens: int) -> str:
    """The simulator's answer to this chat, computed without asking it."""
    return "".join(expected_reply(prompt, max_tokens).tokens)


def prompt_that_ends(base: str, max_tokens: int, finish_reason: str) -> str:
    """`base` with the first numbered suffix whose answer ends with `finish_reason`
    (`stop`: shorter than `max_tokens`; `length`: cut at it), so a run has both."""
    for variant in itertools.count():
        prompt = f"{base} (v{variant})"
        if expected_reply(prompt, max_tokens).finish_reason == finish_reason:
            return prompt
    raise AssertionError("unreachable")


# --- configuration and records ----------------------------------------------------------


@dataclass(frozen=True)
class RunConfig:
    chats: int = 20
    seed: int = 0
    mode: str = "resume"
    min_tokens: int = 250
    max_tokens: int = 450
    stagger_s: float = 2.0
    deadline_s: float = 240.0
    """How long the chats get to finish after the fault."""
    pg_downtime_s: float = 3.0
    """How long PostgreSQL stays down in the postgres scenario."""


@dataclass
class ChatRun:
    index: int
    prompt: str
    max_tokens: int
    expected: str
    idempotency_key: str
    finish_reason: str = "length"
    """How the simulator's answer ends: `stop` (naturally) or `length` (at max_tokens)."""
    workflow_id: str = ""
    start_attempts: int = 0
    started_at: float = 0.0
    follower: ChatFollower | None = None
    start_error: str | None = None


@dataclass
class FaultRecord:
    """What was done, when (time.time()), and what the harness saw meanwhile."""

    kind: str
    started_at: float
    ended_at: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    probes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def outage_s(self) -> float:
        return max(0.0, self.ended_at - self.started_at)


@dataclass
class ChatVerdict:
    index: int
    workflow_id: str
    status: str
    completed: bool
    affected: bool
    total_chunks: int
    chunks_lost: int
    chunks_duplicated: int
    events_lost: int
    events_duplicated: int
    events_out_of_order: int
    text_ok: bool
    finish_reason: str | None
    preview_exact: bool
    preview_overlaps: int
    preview_gaps: int
    resets: int
    generations: int
    generated_before_fault: bool
    recovery_s: float | None
    connects: int
    drops: int
    start_attempts: int
    latency_s: float | None
    problems: list[str] = field(default_factory=list)


@dataclass
class ScenarioResult:
    scenario: str
    mode: str
    chats: int
    seed: int
    fault: dict[str, Any]
    trigger: dict[str, Any]
    completed: int
    ends: dict[str, int]
    """Completed answers by finish reason: `stop` (natural end) and `length` (the limit)."""
    affected: int
    chunks_lost: int
    chunks_duplicated: int
    events_lost: int
    events_duplicated: int
    generations_mean: float
    generations_max: int
    generations_after_fault_gen_done: list[int]
    preview_exact: int
    worst_recovery_s: float | None
    outage_s: float
    wall_s: float
    passed: bool
    failures: list[str]
    verdicts: list[ChatVerdict]

    def row(self) -> dict[str, Any]:
        """The table's columns."""
        recovery = "-" if self.worst_recovery_s is None else f"{self.worst_recovery_s:.2f}"
        return {
            "scenario": self.scenario,
            "completed/N": f"{self.completed}/{self.chats}",
            "ends stop/length": f"{self.ends.get('stop', 0)}/{self.ends.get('length', 0)}",
            "lost": self.chunks_lost,
            "duplicated": self.chunks_duplicated,
            "generations/chat": f"{self.generations_mean:.2f} (max {self.generations_max})",
            "worst recovery s": recovery,
            "pass": "PASS" if self.passed else "FAIL",
        }

    def to_json(self, with_chats: bool = True) -> dict[str, Any]:
        data = asdict(self)
        if not with_chats:
            data.pop("verdicts")
        return data


# --- the scenario context given to a fault ----------------------------------------------


@dataclass
class FaultContext:
    stack: ChaosStack
    config: RunConfig
    rng: random.Random
    http: httpx.AsyncClient
    temporal: Client
    db: asyncpg.Pool
    runs: list[ChatRun]
    target: ChatRun

    def followers(self) -> list[ChatFollower]:
        return [r.follower for r in self.runs if r.follower is not None]

    def unfinished(self) -> list[ChatRun]:
        return [r for r in self.runs if r.follower is not None and not r.follower.done.is_set()]


FaultFn = Callable[[FaultContext], Awaitable[FaultRecord]]


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    how: str
    inject: FaultFn
    phase: str | None = None
    """The phase of the target chat the fault must hit; None: drawn at random."""
    database_outage: bool = False
    """PostgreSQL is down while answers stream: the live preview may stop (by design)."""


# --- helpers used by faults -------------------------------------------------------------


async def generating_worker(temporal: Client, workflow_id: str) -> str | None:
    """Identity of the worker running this chat's generate_full_text now, if any."""
    description = await temporal.get_workflow_handle(workflow_id).describe()
    for pending in description.raw_description.pending_activities:
        if (
            pending.activity_type.name == "generate_full_text"
            and pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
            and pending.last_worker_identity
        ):
            return str(pending.last_worker_identity)
    return None


async def workflow_holder(temporal: Client, workflow_id: str) -> str | None:
    """Identity of the worker that ran the chat's latest workflow task (it holds the
    workflow's state, sticky, and schedules its next activities)."""
    history = await temporal.get_workflow_handle(workflow_id).fetch_history()
    holder: str | None = None
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            holder = event.workflow_task_started_event_attributes.identity or holder
    return holder


async def probe_status_until(
    ctx: FaultContext, stop: asyncio.Event, interval_s: float = 0.5
) -> list[dict[str, Any]]:
    """GET /status of the unfinished chats every `interval_s` until `stop` is set: does
    the gateway still answer while a dependency is down?"""
    probes: list[dict[str, Any]] = []
    targets = ctx.unfinished() or ctx.runs
    while not stop.is_set():
        for run in targets[:5]:
            code, body = await get_status(ctx.http, run.workflow_id, auth_headers())
            probes.append(
                {
                    "at": time.time(),
                    "code": code,
                    "status": body.get("status"),
                    "source": body.get("source"),
                }
            )
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
        except TimeoutError:
            pass
    return probes


# --- running a scenario -----------------------------------------------------------------


async def run_scenario(
    stack: ChaosStack, scenario: Scenario, config: RunConfig, log: Callable[[str], None] = print
) -> ScenarioResult:
    """Run one scenario on a healthy stack; the stack is healthy again afterwards."""
    rng = random.Random(f"{config.seed}:{scenario.name}")
    restarted = await asyncio.to_thread(stack.ensure_healthy)
    if restarted:
        log(f"  (restarted before the scenario: {', '.join(restarted)})")
    began = time.time()
    tag = uuid.uuid4().hex[:8]
    runs = []
    for i in range(config.chats):
        max_tokens = rng.randint(config.min_tokens, config.max_tokens)
        ends = "stop" if i % 2 == 0 else "length"  # half end naturally, half at the limit
        prompt = prompt_that_ends(
            f"Chaos {scenario.name} chat {i}: tell me about durable execution [{tag}-{i}]",
            max_tokens,
            ends,
        )
        expected = expected_answer(prompt, max_tokens)
        runs.append(ChatRun(i, prompt, max_tokens, expected, f"chaos-{tag}-{i}", ends))
    offsets = [rng.uniform(0, config.stagger_s) for _ in runs]
    target = rng.choice(runs)
    phase = scenario.phase or rng.choice(PHASES)
    fraction = round(rng.uniform(0.1, 0.9), 3)

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=50)
    timeout = httpx.Timeout(30.0, connect=5.0)
    db = await asyncpg.create_pool(stack.database_url, min_size=0, max_size=4)
    temporal = await Client.connect(stack.temporal_address)
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, limits=limits, timeout=timeout, headers=auth_headers()
    ) as http:
        tasks = [
            asyncio.create_task(_start_and_follow(http, run, offsets[run.index])) for run in runs
        ]
        ctx = FaultContext(stack, config, rng, http, temporal, db, runs, target)
        trigger = await _wait_for_trigger(target, phase, fraction)
        log(f"  fault at chat {target.index} {trigger['observed']} (aimed: {phase} {fraction:.0%})")
        fault = await scenario.inject(ctx)
        log(f"  injected: {fault.kind} {fault.details}; back after {fault.outage_s:.2f} s")

        done, pending = await asyncio.wait(tasks, timeout=config.deadline_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            if task.exception() is not None:
                log(f"  a chat task failed: {task.exception()!r}")
        await asyncio.to_thread(stack.ensure_healthy)
        verdicts = [await _verify(ctx, run, fault) for run in runs]
    await db.close()
    result = _summarise(scenario, config, fault, trigger, verdicts, time.time() - began)
    return result


async def _start_and_follow(http: httpx.AsyncClient, run: ChatRun, delay_s: float) -> None:
    await asyncio.sleep(delay_s)
    run.started_at = time.time()
    body = {
        "prompt": run.prompt,
        "max_tokens": run.max_tokens,
        "idempotency_key": run.idempotency_key,
    }
    try:
        run.workflow_id, run.start_attempts = await start_chat(http, body)
    except StartFailedError as err:
        run.start_error = str(err)
        return
    run.follower = ChatFollower(http, run.workflow_id)
    await run.follower.run()


async def _wait_for_trigger(
    target: ChatRun, phase: str, fraction: float, timeout_s: float = 120.0
) -> dict[str, Any]:
    """Wait until the target chat is `fraction` through `phase` (as its client sees it)."""
    deadline = time.monotonic() + timeout_s
    goal_chars = max(1, int(fraction * len(target.expected)))
    observed = "timed out"
    while time.monotonic() < deadline:
        follower = target.follower
        if follower is not None:
            if follower.done.is_set():
                observed = "after the chat finished (missed)"
                break
            if phase == "generating":
                if follower.preview_chars >= goal_chars and follower.stage == "generating":
                    observed = f"generating, {follower.preview_chars}/{len(target.expected)} chars"
                    break
                if follower.stage in ("checkpointing",):
                    observed = "checkpointing (generation ended before the aim)"
                    break
            elif follower.total_chunks:
                goal = max(1, math.ceil(fraction * follower.total_chunks))
                if len(follower.chunk_indices) >= goal:
                    observed = (
                        f"checkpointing, {len(follower.chunk_indices)}/{follower.total_chunks} "
                        "chunks"
                    )
                    break
        await asyncio.sleep(0.005)
    return {"chat": target.index, "phase": phase, "fraction": fraction, "observed": observed}


# --- verification -----------------------------------------------------------------------


def _preview(events: list[Received]) -> tuple[str, int, int, int]:
    """(preview text, overlaps, gaps, resets) as a viewer rebuilds it from the stream."""
    text = ""
    overlaps = gaps = resets = 0
    for event in events:
        if event.type == "reset":
            text = ""
            resets += 1
        elif event.type == "delta":
            offset = int(event.data["offset"])
            if offset < len(text):
                overlaps += 1
                text = text[:offset]
            elif offset > len(text):
                gaps += 1
                text += "\0" * (offset - len(text))
            text += str(event.data["text"])
    return text, overlaps, gaps, resets


async def _verify(ctx: FaultContext, run: ChatRun, fault: FaultRecord) -> ChatVerdict:
    problems: list[str] = []
    follower = run.follower
    events = follower.events if follower is not None else []
    if run.start_error:
        problems.append(f"start failed: {run.start_error}")

    status = "not started"
    rows: list[Any] = []
    log_rows: list[Any] = []
    total = 0
    finish_reason: str | None = None
    if run.workflow_id:
        status = await _final_status(ctx, run.workflow_id)
        rows = await ctx.db.fetch(
            "SELECT idx, text FROM chunks WHERE workflow_id = $1 ORDER BY idx", run.workflow_id
        )
        log_rows = await ctx.db.fetch(
            "SELECT seq, type, created_at, data->>'stage' AS stage FROM chat_events "
            "WHERE workflow_id = $1 ORDER BY seq",
            run.workflow_id,
        )
        generation = await ctx.db.fetchrow(
            "SELECT coalesce(total_chunks, 0) AS total, finish_reason FROM generations "
            "WHERE workflow_id = $1",
            run.workflow_id,
        )
        total = int(generation["total"]) if generation else 0
        finish_reason = generation["finish_reason"] if generation else None
    completed = status == "completed"
    if not completed:
        problems.append(f"status {status}")
    elif finish_reason != run.finish_reason:
        problems.append(f"finish reason {finish_reason}, the simulator's is {run.finish_reason}")

    # PostgreSQL: chunk rows 0..total-1, once each, with the simulator's text.
    db_indices = [int(r["idx"]) for r in rows]
    lost = len(set(range(total)) - set(db_indices))
    duplicated = len(db_indices) - len(set(db_indices)) + len(set(db_indices) - set(range(total)))
    db_text = "".join(str(r["text"]) for r in rows)
    text_ok = db_text == run.expected
    if not text_ok:
        problems.append("the chunk rows' text is not the answer")

    # SSE: every chunk once, every event of the log once, in order.
    sse_chunks = Counter(int(e.data["index"]) for e in events if e.type == "chunk")
    lost += len(set(range(total)) - set(sse_chunks))
    duplicated += sum(count - 1 for count in sse_chunks.values())
    sse_text = "".join(
        next(str(e.data["text"]) for e in events if e.type == "chunk" and e.data["index"] == i)
        for i in sorted(sse_chunks)
    )
    if sse_text != run.expected:
        text_ok = False
        problems.append("the streamed chunks' text is not the answer")
    seqs = [e.seq for e in events]
    log_seqs = {int(r["seq"]) for r in log_rows}
    events_lost = len(log_seqs - set(seqs))
    events_duplicated = len(seqs) - len(set(seqs))
    out_of_order = sum(1 for a, b in itertools.pairwise(seqs) if b <= a)

    # REST: the chunks by cursor.
    if completed:
        try:
            by_cursor = await read_chunks_by_cursor(ctx.http, run.workflow_id, auth_headers())
            cursor_ids = [int(c["id"]) for c in by_cursor]
            lost += len(set(range(total)) - set(cursor_ids))
            duplicated += len(cursor_ids) - len(set(cursor_ids))
            if "".join(str(c["text"]) for c in by_cursor) != run.expected:
                text_ok = False
                problems.append("the chunks read by cursor are not the answer")
        except httpx.HTTPError as err:
            problems.append(f"chunks by cursor: {err}")

    preview, overlaps, gaps, resets = _preview(events)
    preview_exact = preview == run.expected

    # The simulator: generations started for this chat's prompt.
    stats = (await ctx.http.get(f"{ctx.stack.simulator_url}/sim/stats")).json()
    generations = int(stats["by_prompt"].get(run.prompt, {}).get("started", 0))
    checkpointing_at = next(
        (r["created_at"] for r in log_rows if r["stage"] == "checkpointing"), None
    )
    generated_before_fault = (
        checkpointing_at is not None and _ts(checkpointing_at) < fault.started_at
    )

    # Recovery: the first event received after the fault that was written after it.
    affected = bool(events) and not any(
        e.type in ("completed", "failed", "cancelled") and e.at <= fault.started_at for e in events
    )
    if not events and run.workflow_id:
        affected = True
    recovery_s: float | None = None
    if affected:
        created = {int(r["seq"]): _ts(r["created_at"]) for r in log_rows}
        after = [e for e in events if e.at > fault.started_at]
        fresh = [e for e in after if created.get(e.seq, 0.0) > fault.started_at]
        first = fresh[0] if fresh else (after[0] if after else None)
        if first is not None:
            recovery_s = round(first.at - fault.started_at, 3)
    terminal_at = next((e.at for e in events if e.type == "completed"), None)
    latency_s = round(terminal_at - run.started_at, 3) if terminal_at else None

    return ChatVerdict(
        index=run.index,
        workflow_id=run.workflow_id,
        status=status,
        completed=completed,
        affected=affected,
        total_chunks=total,
        chunks_lost=lost,
        chunks_duplicated=duplicated,
        events_lost=events_lost,
        events_duplicated=events_duplicated,
        events_out_of_order=out_of_order,
        text_ok=text_ok,
        finish_reason=finish_reason,
        preview_exact=preview_exact,
        preview_overlaps=overlaps,
        preview_gaps=gaps,
        resets=resets,
        generations=generations,
        generated_before_fault=generated_before_fault,
        recovery_s=recovery_s,
        connects=follower.connects if follower else 0,
        drops=follower.drops if follower else 0,
        start_attempts=run.start_attempts,
        latency_s=latency_s,
        problems=problems,
    )


async def _final_status(ctx: FaultContext, workflow_id: str, timeout_s: float = 90.0) -> str:
    """The status API's answer once it is final. The `completed` event is written by the
    workflow's last activity; the execution closes a workflow task later (seconds, after
    a Temporal restart), and until then the API says `running` with stage `completed`."""
    deadline = time.monotonic() + timeout_s
    while True:
        code, body = await get_status(ctx.http, workflow_id, auth_headers())
        status = str(body.get("status")) if code == 200 else f"HTTP {code}"
        if status in ("completed", "failed", "cancelled", "terminated", "timed_out"):
            return status
        if time.monotonic() > deadline:
            return f"{status} (stage {body.get('stage')}) after {timeout_s:.0f} s more"
        await asyncio.sleep(0.25)


def _ts(value: datetime | float) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value)


def _summarise(
    scenario: Scenario,
    config: RunConfig,
    fault: FaultRecord,
    trigger: dict[str, Any],
    verdicts: list[ChatVerdict],
    wall_s: float,
) -> ScenarioResult:
    failures: list[str] = []
    completed = sum(v.completed for v in verdicts)
    if completed != len(verdicts):
        failures.append(f"{len(verdicts) - completed} chat(s) did not complete")
    lost = sum(v.chunks_lost for v in verdicts)
    duplicated = sum(v.chunks_duplicated for v in verdicts)
    events_lost = sum(v.events_lost for v in verdicts)
    events_duplicated = sum(v.events_duplicated for v in verdicts)
    if lost:
        failures.append(f"{lost} chunk(s) lost")
    if duplicated:
        failures.append(f"{duplicated} chunk(s) duplicated")
    if events_lost or events_duplicated:
        failures.append(f"SSE: {events_lost} event(s) missed, {events_duplicated} twice")
    if any(v.events_out_of_order for v in verdicts):
        failures.append("SSE events out of order")
    if not all(v.text_ok for v in verdicts):
        failures.append("an answer's text differs from the simulator's")
    if any(v.preview_overlaps for v in verdicts):
        failures.append("a live preview showed text twice")
    if not scenario.database_outage:
        inexact = [v.index for v in verdicts if not v.preview_exact]
        if inexact:
            failures.append(f"live preview incomplete for chats {inexact}")
    generations = [v.generations for v in verdicts]
    after_done = [v.generations for v in verdicts if v.generated_before_fault]
    if any(g != 1 for g in after_done):
        failures.append("an LLM generation repeated after it had finished")
    if config.mode == "resume":
        repeated = {v.index: v.generations for v in verdicts if v.generations != 1}
        if repeated:
            failures.append(f"resume mode: LLM generations != 1 for chats {repeated}")
    bad_probes = [p for p in fault.probes if p["code"] != 200]
    if bad_probes:
        failures.append(f"status endpoint failed {len(bad_probes)}/{len(fault.probes)} probes")
    for v in verdicts:
        for problem in v.problems:
            failures.append(f"chat {v.index}: {problem}")
    recoveries = [v.recovery_s for v in verdicts if v.recovery_s is not None]
    return ScenarioResult(
        scenario=scenario.name,
        mode=config.mode,
        chats=len(verdicts),
        seed=config.seed,
        fault={
            "kind": fault.kind,
            "started_at": fault.started_at,
            "ended_at": fault.ended_at,
            "details": fault.details,
            "outage_s": round(fault.outage_s, 3),
            "status_probes": len(fault.probes),
            "status_probes_ok": len(fault.probes) - len(bad_probes),
            "status_probe_sources": dict(Counter(str(p["source"]) for p in fault.probes)),
        },
        trigger=trigger,
        completed=completed,
        ends=dict(Counter(v.finish_reason for v in verdicts if v.completed and v.finish_reason)),
        affected=sum(v.affected for v in verdicts),
        chunks_lost=lost,
        chunks_duplicated=duplicated,
        events_lost=events_lost,
        events_duplicated=events_duplicated,
        generations_mean=round(sum(generations) / max(1, len(generations)), 3),
        generations_max=max(generations, default=0),
        generations_after_fault_gen_done=after_done,
        preview_exact=sum(v.preview_exact for v in verdicts),
        worst_recovery_s=max(recoveries) if recoveries else None,
        outage_s=round(fault.outage_s, 3),
        wall_s=round(wall_s, 1),
        passed=not failures,
        failures=failures,
        verdicts=verdicts,
    )
