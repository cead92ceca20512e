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

from chaos.client import ChatFollower, Received, get_status
from chaos.stack import ChaosStack, auth_headers
from common.chunking import split_into_chunks
from common.contract import TERMINAL_EVENTS
from testing.chats import StartRefusedError, read_all_chunks, start_chat_retrying
from testing.oracle import expected_answer, prompt_ending

PHASES = ("generating", "checkpointing")


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
    use_cache: bool = True
    task: asyncio.Task[None] | None = None
    """The task that started the chat and follows it to its (first) terminal event."""
    # What an operator did to this chat (the operator-* scenarios), and what it must give.
    action: str | None = None
    """`terminate`, `reset-keep` (reset mid-checkpoint: the same answer goes on) or
    `reset-regenerate` (reset to before the LLM call: a new answer)."""
    expected_status: str = "completed"
    expected_generations: int = 1
    original_expected: str = ""
    """The answer before a regenerating reset (`expected` is then the new one)."""
    action_done_at: float | None = None
    """When the operator's CLI command returned (time.time())."""
    reset_run_id: str | None = None
    """The run a reset started: the chat's record and answer must be that run's."""
    kept_answer_run_id: str | None = None
    """A reset that keeps the answer: the run whose chunks stay the answer."""
    operator: dict[str, Any] = field(default_factory=dict)


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
    expected_status: str
    completed: bool
    affected: bool
    total_chunks: int
    chunks_lost: int
    chunks_duplicated: int
    events_lost: int
    events_duplicated: int
    events_out_of_order: int
    events_after_end: int
    """Events written to the chat's log after the terminal event its client got."""
    text_ok: bool
    finish_reason: str | None
    preview_exact: bool
    preview_overlaps: int
    preview_gaps: int
    resets: int
    generations: int
    expected_generations: int
    generated_before_fault: bool
    recovery_s: float | None
    connects: int
    drops: int
    start_attempts: int
    latency_s: float | None
    problems: list[str] = field(default_factory=list)
    operator: dict[str, Any] = field(default_factory=dict)
    """The operator's action on this chat and what was measured (operator-* scenarios)."""


@dataclass
class ScenarioResult:
    scenario: str
    mode: str
    chats: int
    seed: int
    fault: dict[str, Any]
    trigger: dict[str, Any]
    completed: int
    terminated: int
    """Chats that ended `terminated` (by the operator, in operator-terminate)."""
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
    generations_unexpected: dict[int, int]
    """Chats whose LLM generations differ from what they should have (1; 2 after a
    regenerating reset), by chat index."""
    preview_exact: int
    worst_recovery_s: float | None
    outage_s: float
    wall_s: float
    passed: bool
    failures: list[str]
    verdicts: list[ChatVerdict]
    operator: dict[str, Any] = field(default_factory=dict)
    """operator-* scenarios: what the operator did and the worst delays measured."""

    def row(self) -> dict[str, Any]:
        """The table's columns."""
        recovery = "-" if self.worst_recovery_s is None else f"{self.worst_recovery_s:.2f}"
        return {
            "scenario": self.scenario,
            "completed/N": f"{self.completed}/{self.chats}"
            + (f" +{self.terminated} terminated" if self.terminated else ""),
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
    tag: str = ""
    """Unique to this scenario's run (in prompts, idempotency keys, variants)."""
    background: list[asyncio.Task[Any]] = field(default_factory=list)
    """Tasks a fault leaves running (e.g. following a reset chat again); the harness
    waits for them with the chats, before verifying."""

    @property
    def chunk_target_chars(self) -> int:
        """The chunk size the stack's gateway gives chats (CHUNK_TARGET_CHARS)."""
        return int(self.stack.app_env.get("CHUNK_TARGET_CHARS", "120"))

    def followers(self) -> list[ChatFollower]:
        return [r.follower for r in self.runs if r.follower is not None]

    def unfinished(self) -> list[ChatRun]:
        return [r for r in self.runs if r.follower is not None and not r.follower.done.is_set()]


FaultFn = Callable[[FaultContext], Awaitable[FaultRecord]]
AfterFn = Callable[[FaultContext, FaultRecord], Awaitable[list[str]]]


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
    fraction_range: tuple[float, float] = (0.1, 0.9)
    """The fraction of the phase the fault is aimed at is drawn from this range."""
    cache: bool = True
    """Whether the chats use the answer cache (a reset to before the LLM call of a chat
    whose answer is cached would be answered from the cache, not regenerated)."""
    after: AfterFn | None = None
    """Checks once every chat has ended (failures returned; findings in the fault's
    details under `after`)."""


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
        prompt = prompt_ending(
            ends,
            max_tokens,
            f"Chaos {scenario.name} chat {i}: tell me about durable execution [{tag}-{i}]",
            unique=False,
        )
        expected = expected_answer(prompt, max_tokens)
        runs.append(
            ChatRun(
                i,
                prompt,
                max_tokens,
                expected,
                f"chaos-{tag}-{i}",
                ends,
                use_cache=scenario.cache,
                original_expected=expected,
            )
        )
    offsets = [rng.uniform(0, config.stagger_s) for _ in runs]
    target = rng.choice(runs)
    phase = scenario.phase or rng.choice(PHASES)
    fraction = round(rng.uniform(*scenario.fraction_range), 3)

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=50)
    timeout = httpx.Timeout(30.0, connect=5.0)
    db = await asyncpg.create_pool(stack.database_url, min_size=0, max_size=4)
    temporal = await Client.connect(stack.temporal_address)
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, limits=limits, timeout=timeout, headers=auth_headers()
    ) as http:
        tasks = []
        for run in runs:
            run.task = asyncio.create_task(start_and_follow(http, run, offsets[run.index]))
            tasks.append(run.task)
        ctx = FaultContext(stack, config, rng, http, temporal, db, runs, target, tag)
        trigger = await _wait_for_trigger(target, phase, fraction)
        log(f"  fault at chat {target.index} {trigger['observed']} (aimed: {phase} {fraction:.0%})")
        fault = await scenario.inject(ctx)
        log(f"  injected: {fault.kind} {fault.details}; back after {fault.outage_s:.2f} s")

        done, pending = await asyncio.wait([*tasks, *ctx.background], timeout=config.deadline_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            if task.exception() is not None:
                log(f"  a chat task failed: {task.exception()!r}")
        await asyncio.to_thread(stack.ensure_healthy)
        verdicts = [await _verify(ctx, run, fault) for run in runs]
        after_failures = await scenario.after(ctx, fault) if scenario.after else []
    await db.close()
    result = _summarise(
        scenario, config, fault, trigger, verdicts, time.time() - began, after_failures
    )
    return result


async def start_and_follow(http: httpx.AsyncClient, run: ChatRun, delay_s: float) -> None:
    await asyncio.sleep(delay_s)
    run.started_at = time.time()
    body = {
        "prompt": run.prompt,
        "max_tokens": run.max_tokens,
        "idempotency_key": run.idempotency_key,
    }
    if not run.use_cache:
        body["cache"] = False
    try:
        run.workflow_id, run.start_attempts = await start_chat_retrying(http, body)
    except StartRefusedError as err:
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


def _segments(events: list[Received]) -> list[list[Received]]:
    """The stream cut at each `reset` event: what a viewer showed before each reset, and
    (last) what it shows now."""
    segments: list[list[Received]] = [[]]
    for event in events:
        if event.type == "reset":
            segments.append([])
        else:
            segments[-1].append(event)
    return segments


def _chunk_texts(events: list[Received]) -> tuple[Counter[int], dict[int, str]]:
    """Chunk indices received (with counts) and the text of each (first received)."""
    counts: Counter[int] = Counter()
    texts: dict[int, str] = {}
    for event in events:
        if event.type == "chunk":
            index = int(event.data["index"])
            counts[index] += 1
            texts.setdefault(index, str(event.data["text"]))
    return counts, texts


async def _verify(ctx: FaultContext, run: ChatRun, fault: FaultRecord) -> ChatVerdict:
    problems: list[str] = []
    follower = run.follower
    events = follower.events if follower is not None else []
    if run.start_error:
        problems.append(f"start failed: {run.start_error}")

    status = "not started"
    body: dict[str, Any] = {}
    rows: list[Any] = []
    log_rows: list[Any] = []
    record: Any = None
    total = 0
    finish_reason: str | None = None
    if run.workflow_id:
        status, body = await _final_status(ctx, run.workflow_id)
        record = await ctx.db.fetchrow(
            "SELECT coalesce(total_chunks, 0) AS total, finish_reason, run_id, answer_run_id, "
            "status, stage, error FROM generations WHERE workflow_id = $1",
            run.workflow_id,
        )
        # The chat's answer: the chunks of its answer run (a reset leaves the chunks of
        # an answer it replaced under their own run id; readers never see them).
        rows = await ctx.db.fetch(
            "SELECT c.idx, c.text FROM chunks c JOIN generations g "
            "ON g.workflow_id = c.workflow_id AND c.run_id = g.answer_run_id "
            "WHERE c.workflow_id = $1 ORDER BY c.idx",
            run.workflow_id,
        )
        log_rows = await ctx.db.fetch(
            "SELECT seq, type, created_at, data->>'stage' AS stage FROM chat_events "
            "WHERE workflow_id = $1 ORDER BY seq",
            run.workflow_id,
        )
        total = int(record["total"]) if record else 0
        finish_reason = record["finish_reason"] if record else None
    if run.action == "terminate" and status == "completed":
        await _terminate_landed_after_end(ctx, run, log_rows)
    completed = status == "completed"
    # The chat must end with its whole answer; else (terminated) with a beginning of it.
    whole = run.expected_status == "completed"
    if status != run.expected_status:
        problems.append(f"status {status}" + ("" if whole else f", expected {run.expected_status}"))
    elif completed and finish_reason != run.finish_reason:
        problems.append(f"finish reason {finish_reason}, the simulator's is {run.finish_reason}")

    db_indices = [int(r["idx"]) for r in rows]
    db_texts = {int(r["idx"]): str(r["text"]) for r in rows}
    segments = _segments(events)
    shown = segments[-1]  # what the viewer shows after the last reset (all, if none)
    sse_chunks, sse_texts = _chunk_texts(shown)
    # A chunk twice within one segment is a duplicate; across a reset it is not (the
    # reset told the viewer to drop what it showed).
    duplicated = sum(
        count - 1 for segment in segments for count in _chunk_texts(segment)[0].values()
    )
    text_ok = True
    if whole:
        # PostgreSQL: chunk rows 0..total-1, once each, with the simulator's text.
        lost = len(set(range(total)) - set(db_indices))
        duplicated += len(db_indices) - len(set(db_indices))
        duplicated += len(set(db_indices) - set(range(total)))
        if "".join(str(r["text"]) for r in rows) != run.expected:
            text_ok = False
            problems.append("the chunk rows' text is not the answer")
        # SSE: every chunk once.
        lost += len(set(range(total)) - set(sse_chunks))
        if "".join(sse_texts[i] for i in sorted(sse_texts)) != run.expected:
            text_ok = False
            problems.append("the streamed chunks' text is not the answer")
    else:
        # Ended early: every chunk saved is the answer's chunk at that index, and was shown.
        expected_chunks = split_into_chunks(run.expected, ctx.chunk_target_chars)
        wrong = [
            i for i, t in db_texts.items() if i >= len(expected_chunks) or t != expected_chunks[i]
        ]
        if wrong:
            text_ok = False
            problems.append(f"saved chunks {wrong[:5]} are not the answer's")
        lost = len(set(db_indices) - set(sse_chunks))
        extra = sorted(set(sse_chunks) - set(db_indices))
        if extra:
            problems.append(f"chunks {extra[:5]} streamed but not saved")
        wrong_sse = [i for i, t in sse_texts.items() if db_texts.get(i, t) != t]
        if wrong_sse:
            text_ok = False
            problems.append(f"streamed chunks {wrong_sse[:5]} differ from the saved ones")

    # SSE: every event of the log once, in order, and nothing after the terminal event.
    seqs = [e.seq for e in events]
    log_types = {int(r["seq"]): str(r["type"]) for r in log_rows}
    end_seq = events[-1].seq if follower is not None and follower.terminal else None
    considered = {s for s in log_types if end_seq is None or s <= end_seq}
    events_lost = len(considered - set(seqs))
    after_end = sorted(s for s in log_types if end_seq is not None and s > end_seq)
    if after_end:
        kinds = dict(Counter(log_types[s] for s in after_end))
        written = {int(r["seq"]): _ts(r["created_at"]) for r in log_rows}
        assert end_seq is not None
        lag = max(written[s] for s in after_end) - written[end_seq]
        problems.append(
            f"{len(after_end)} event(s) written after the terminal event "
            f"{log_types[end_seq]}: {kinds}, up to {lag:.3f} s after it"
        )
    events_duplicated = len(seqs) - len(set(seqs))
    out_of_order = sum(1 for a, b in itertools.pairwise(seqs) if b <= a)

    # REST: the chunks by cursor.
    by_cursor: list[dict[str, Any]] | None = None
    if run.workflow_id and status == run.expected_status:
        try:
            by_cursor = await read_all_chunks(ctx.http, run.workflow_id, auth_headers())
        except httpx.HTTPError as err:
            problems.append(f"chunks by cursor: {err}")
    if by_cursor is not None:
        cursor_ids = [int(c["id"]) for c in by_cursor]
        cursor_text = "".join(str(c["text"]) for c in by_cursor)
        duplicated += len(cursor_ids) - len(set(cursor_ids))
        if whole:
            lost += len(set(range(total)) - set(cursor_ids))
            if cursor_text != run.expected:
                text_ok = False
                problems.append("the chunks read by cursor are not the answer")
        else:
            contiguous = next(i for i in itertools.count() if i not in db_texts)
            if cursor_ids != list(range(contiguous)):
                problems.append(
                    f"the cursor served chunks {cursor_ids[:3]}…, the saved run 0..{contiguous - 1}"
                )
            if not run.expected.startswith(cursor_text):
                text_ok = False
                problems.append("the chunks read by cursor are not a beginning of the answer")

    preview, overlaps, gaps, resets = _preview(events)
    if run.action == "reset-keep":  # nothing new is generated: the chunks follow the reset
        preview_exact = preview in ("", run.expected)
    elif not whole:
        preview_exact = run.expected.startswith(preview) and not gaps
    else:
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

    operator = dict(run.operator)
    if run.action is not None:
        _verify_operator(ctx, run, events, record, body, by_cursor, operator, problems)
        operator["answer_ok"] = not problems

    # Recovery: the first event received after the fault that was written after it; for
    # a chat an operator acted on, from the CLI's return to the first event of its end.
    affected = run.action is not None or (
        bool(events)
        and not any(e.type in TERMINAL_EVENTS and e.at <= fault.started_at for e in events)
    )
    if not events and run.workflow_id:
        affected = True
    recovery_s: float | None = None
    if run.action is not None:
        recovery_s = operator.get("stream_end_s" if run.action == "terminate" else "reset_seen_s")
    elif affected:
        created = {int(r["seq"]): _ts(r["created_at"]) for r in log_rows}
        after = [e for e in events if e.at > fault.started_at]
        fresh = [e for e in after if created.get(e.seq, 0.0) > fault.started_at]
        first = fresh[0] if fresh else (after[0] if after else None)
        if first is not None:
            recovery_s = round(first.at - fault.started_at, 3)
    terminal_at = next((e.at for e in reversed(events) if e.type == "completed"), None)
    latency_s = round(terminal_at - run.started_at, 3) if terminal_at else None

    return ChatVerdict(
        index=run.index,
        workflow_id=run.workflow_id,
        status=status,
        expected_status=run.expected_status,
        completed=completed,
        affected=affected,
        total_chunks=total,
        chunks_lost=lost,
        chunks_duplicated=duplicated,
        events_lost=events_lost,
        events_duplicated=events_duplicated,
        events_out_of_order=out_of_order,
        events_after_end=len(after_end),
        text_ok=text_ok,
        finish_reason=finish_reason,
        preview_exact=preview_exact,
        preview_overlaps=overlaps,
        preview_gaps=gaps,
        resets=resets,
        generations=generations,
        expected_generations=run.expected_generations,
        generated_before_fault=generated_before_fault,
        recovery_s=recovery_s,
        connects=follower.connects if follower else 0,
        drops=follower.drops if follower else 0,
        start_attempts=run.start_attempts,
        latency_s=latency_s,
        problems=problems,
        operator=operator,
    )


async def _terminate_landed_after_end(ctx: FaultContext, run: ChatRun, log_rows: list[Any]) -> None:
    """The CLI's terminate was accepted, yet the chat completed: it landed when the
    chat's answer was whole (the `completed` record written, the execution not closed
    yet). The chat is then held to the whole answer; what Temporal and the record say is
    kept in the details."""
    run.action = "terminate-after-end"
    run.expected_status = "completed"
    run.operator["action"] = run.action
    written = next((_ts(r["created_at"]) for r in log_rows if r["type"] == "completed"), None)
    if written is not None and run.action_done_at is not None:
        run.operator["completed_written_after_cli_s"] = round(written - run.action_done_at, 3)
    description = await ctx.temporal.get_workflow_handle(run.workflow_id).describe()
    run.operator["temporal_status"] = description.status.name if description.status else None


def _verify_operator(
    ctx: FaultContext,
    run: ChatRun,
    events: list[Received],
    record: Any,
    body: dict[str, Any],
    by_cursor: list[dict[str, Any]] | None,
    operator: dict[str, Any],
    problems: list[str],
) -> None:
    """What an operator's terminate or reset must leave (besides the checks above, which
    already hold the chat to its expected end): the stream's end, the record, and for a
    reset exactly one run's answer after the last `reset` event."""
    done_at = run.action_done_at or 0.0
    operator["stream"] = _stream_outline(events, run.follower)
    if run.action == "terminate-after-end":
        return  # a completed chat, checked as such above
    if run.action == "terminate":
        end = events[-1] if events else None
        if end is None or end.type != "terminated":
            problems.append(
                f"the follower's stream ended with {end.type if end else 'nothing'}, not terminated"
            )
        else:
            operator["stream_end_s"] = round(end.at - done_at, 3)
            reason = str(operator.get("reason", ""))
            if reason not in str((end.data or {}).get("error", "")):
                problems.append("the terminated event does not carry the operator's reason")
        error = str(body.get("error") or "")
        if not error.startswith(
            "Terminated by an operator with the temporal CLI"
        ) or not error.endswith(str(operator.get("reason", ""))):
            problems.append(f"status error {error!r}")
        if record is None or record["status"] != "terminated" or record["stage"] != "terminated":
            problems.append(
                f"record {dict(record) if record else None} is not closed as terminated"
            )
        operator["chunks_saved"] = len(by_cursor or [])
        return

    # A reset: the stream after the last `reset` is the new run's, and only its.
    resets = [i for i, e in enumerate(events) if e.type == "reset"]
    ours = [
        i
        for i in resets
        if isinstance(events[i].data, dict) and events[i].data.get("run_id") == run.reset_run_id
    ]
    if not ours:
        problems.append("no `reset` event naming the new run reached the follower")
        return
    reset = events[ours[-1]]
    operator["reset_seen_s"] = round(events[ours[0]].at - done_at, 3)
    if len(ours) > 1:
        problems.append(f"{len(ours)} `reset` events for the same new run")
    if resets[-1] != ours[-1]:
        problems.append("another `reset` followed the one of the operator's reset")
    data = reset.data
    if data.get("scope") != "run" or data.get("previous_run_id") != operator.get("previous_run_id"):
        problems.append(f"reset event {data}")
    after = events[ours[-1] + 1 :]
    chunks = [int(e.data["index"]) for e in after if e.type == "chunk"]
    texts = {int(e.data["index"]): str(e.data["text"]) for e in after if e.type == "chunk"}
    if sorted(chunks) != list(range(len(chunks))):
        problems.append(f"after the reset the chunk indices are not 0..n-1 once each: {chunks}")
    shown = "".join(texts[i] for i in sorted(texts))
    served = "".join(str(c["text"]) for c in by_cursor or [])
    operator["chunks_after_reset"] = len(chunks)
    operator["answer"] = (
        "new"
        if shown == run.expected and run.expected != run.original_expected
        else "original"
        if shown == run.original_expected
        else "mixed or partial"
    )
    if shown != run.expected:
        problems.append(
            f"after the reset the follower has {operator['answer']} text, not "
            + ("the regenerated answer" if run.action == "reset-regenerate" else "the answer")
        )
    if served != run.expected:
        problems.append("the chunks by cursor are not exactly one run's answer")
    end = events[-1] if events else None
    if end is None or end.type != "completed":
        problems.append("the stream after the reset did not end with completed")
    else:
        operator["stream_end_s"] = round(end.at - done_at, 3)
    if record is None or record["run_id"] != run.reset_run_id:
        problems.append("the record's run_id is not the new run")
    want_answer_run = (
        run.reset_run_id if run.action == "reset-regenerate" else run.kept_answer_run_id
    )
    if record is not None and record["answer_run_id"] != want_answer_run:
        problems.append(
            f"answer_run_id {record['answer_run_id']}, expected {want_answer_run} "
            f"({'the new run' if run.action == 'reset-regenerate' else 'the kept answer'})"
        )


def _stream_outline(events: list[Received], follower: ChatFollower | None) -> str:
    """The stream as its viewer got it, run-length encoded by event type, with `|` where
    the connection was opened again: `stage, deltax40, chunkx21 | reset, stage, …`."""
    reopened = sorted(follower.reconnected_at) if follower else []
    parts: list[str] = []
    last, count = "", 0
    for event in events:
        cut = bool(reopened) and event.at >= reopened[0]
        while reopened and event.at >= reopened[0]:
            reopened.pop(0)
        if event.type != last or cut:
            if count:
                parts.append(last if count == 1 else f"{last}x{count}")
            if cut:
                parts.append("|")
            last, count = event.type, 0
        count += 1
    if count:
        parts.append(last if count == 1 else f"{last}x{count}")
    return ", ".join(parts).replace(", |, ", " | ")


async def _final_status(
    ctx: FaultContext, workflow_id: str, timeout_s: float = 90.0
) -> tuple[str, dict[str, Any]]:
    """The status API's answer once it is final. The `completed` event is written by the
    workflow's last activity; the execution closes a workflow task later (seconds, after
    a Temporal restart), and until then the API says `running` with stage `completed`."""
    deadline = time.monotonic() + timeout_s
    while True:
        code, body = await get_status(ctx.http, workflow_id, auth_headers())
        status = str(body.get("status")) if code == 200 else f"HTTP {code}"
        if status in ("completed", "failed", "cancelled", "stopped", "terminated", "timed_out"):
            return status, body
        if time.monotonic() > deadline:
            return f"{status} (stage {body.get('stage')}) after {timeout_s:.0f} s more", body
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
    after_failures: list[str] | None = None,
) -> ScenarioResult:
    failures: list[str] = []
    completed = sum(v.completed for v in verdicts)
    terminated = sum(v.status == "terminated" for v in verdicts)
    unexpected_end = [v for v in verdicts if v.status != v.expected_status]
    if unexpected_end:
        if all(v.expected_status == "completed" for v in unexpected_end):
            failures.append(f"{len(unexpected_end)} chat(s) did not complete")
        else:
            failures.append(f"{len(unexpected_end)} chat(s) did not end as they should")
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
    after_end = {v.index: v.events_after_end for v in verdicts if v.events_after_end}
    if after_end:
        failures.append(f"events written after a chat's terminal event: {after_end}")
    if not all(v.text_ok for v in verdicts):
        failures.append("an answer's text differs from the simulator's")
    if any(v.preview_overlaps for v in verdicts):
        failures.append("a live preview showed text twice")
    if not scenario.database_outage:
        inexact = [v.index for v in verdicts if not v.preview_exact]
        if inexact:
            failures.append(f"live preview incomplete for chats {inexact}")
    generations = [v.generations for v in verdicts]
    after_done = [
        v.generations
        for v in verdicts
        if v.generated_before_fault and v.expected_generations == 1 and not v.operator
    ]
    if any(g != 1 for g in after_done):
        failures.append("an LLM generation repeated after it had finished")
    unexpected = {
        v.index: v.generations for v in verdicts if v.generations != v.expected_generations
    }
    if config.mode == "resume" and unexpected:
        failures.append(f"resume mode: unexpected LLM generations for chats {unexpected}")
    acted_wrong = {
        v.index: v.generations
        for v in verdicts
        if v.operator.get("action") and v.generations != v.expected_generations
    }
    if config.mode != "resume" and acted_wrong:
        failures.append(f"LLM generations of the chats an operator acted on: {acted_wrong}")
    bad_probes = [p for p in fault.probes if p["code"] != 200]
    if bad_probes:
        failures.append(f"status endpoint failed {len(bad_probes)}/{len(fault.probes)} probes")
    failures.extend(after_failures or [])
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
        terminated=terminated,
        ends=dict(Counter(v.finish_reason for v in verdicts if v.completed and v.finish_reason)),
        affected=sum(v.affected for v in verdicts),
        chunks_lost=lost,
        chunks_duplicated=duplicated,
        events_lost=events_lost,
        events_duplicated=events_duplicated,
        generations_mean=round(sum(generations) / max(1, len(generations)), 3),
        generations_max=max(generations, default=0),
        generations_after_fault_gen_done=after_done,
        generations_unexpected=unexpected,
        preview_exact=sum(v.preview_exact for v in verdicts),
        worst_recovery_s=max(recoveries) if recoveries else None,
        outage_s=round(fault.outage_s, 3),
        wall_s=round(wall_s, 1),
        passed=not failures,
        failures=failures,
        verdicts=verdicts,
        operator=_operator_summary(verdicts, fault),
    )


def _worst(values: list[Any]) -> float | None:
    numbers = [float(v) for v in values if v is not None]
    return round(max(numbers), 3) if numbers else None


def _operator_summary(verdicts: list[ChatVerdict], fault: FaultRecord) -> dict[str, Any]:
    """What the operator did in the scenario and the worst delays seen (empty when the
    scenario has no operator)."""
    acted = [v for v in verdicts if v.operator.get("action")]
    if not acted and "after" not in fault.details:
        return {}
    return {
        "actions": dict(Counter(str(v.operator["action"]) for v in acted)),
        "chats_ok": sum(bool(v.operator.get("answer_ok")) for v in acted),
        "chats": len(acted),
        "worst_cli_s": _worst([v.operator.get("cli_s") for v in acted]),
        "worst_status_s": _worst([v.operator.get("status_s") for v in acted]),
        "worst_record_s": _worst([v.operator.get("record_s") for v in acted]),
        "worst_reset_seen_s": _worst([v.operator.get("reset_seen_s") for v in acted]),
        "worst_stream_end_s": _worst([v.operator.get("stream_end_s") for v in acted]),
        **fault.details.get("after", {}),
    }
