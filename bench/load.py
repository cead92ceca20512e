"""Under load: N chats started together through the gateway, each followed on its SSE
stream as a viewer would, beside the same N streams sent straight to the provider in the
same run.

Measured, per level (full size: 100 and 200 chats of 300 tokens; simulator 400 ms to
first token, 40 tokens/s, as a real provider streams):
- first text delta: POST /start sent -> the first `delta` with text on the chat's stream;
- answer completed: POST /start sent -> the `completed` event (every chunk durable);
- errors: a start refused, a stream that did not end `completed`, or an answer whose
  chunks are not the simulator's answer.
Baseline, same run, just before: N streams at once straight to the simulator with the
openai client, as the workers call it (bench/direct.py): its first token and its end.

Beside each level, the floor: N workflows of a chat's shape up to its LLM call (two
no-op local activities, then the activity that would call the provider) started at once
on the same dev server with as many worker processes, Temporal alone, nothing else
running (bench/temporal_floor.py): start sent -> that activity starts. No design that
calls the provider from an activity after a workflow task can give a first token
sooner than the provider's own plus this.

Then a backlog: 100 chats whose long answers (900 to 1,024 tokens) come fast, so that
all of them are checkpointing together; while their `save_chunk` activities wait, a
few new chats start, one every 0.5 s (each beside a direct request started at the same
moment), and their first text delta is timed.

Goals (issue 15): 100 chats: first delta p95 <= direct p95 + 0.5 s, completed p95 <=
1.5 x direct done p95, no error; 200 chats: no error, first delta p95 <= direct p95 +
1.5 s; a chat started during the backlog: first delta <= direct + 0.5 s.

    .venv/bin/python -m bench.load --size full
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import openai
from temporalio.client import Client

from bench.chats import long_prompt
from bench.direct import StreamTimes, provider_client, provider_stream, worker_api
from bench.figures import Figure, Report
from bench.runner import run_benchmark
from bench.sampler import ProcessSampler
from bench.stack import gateway_client, log, stack_processes
from bench.stats import percentile, summary
from bench.temporal_floor import FirstActivityWorkflow, floor_workers
from bench.timing import first_token_breakdown
from common.chunking import split_into_chunks
from common.contract import TERMINAL_EVENTS
from common.settings import Settings
from testing.chats import StartRefusedError, read_all_chunks, start_chat_retrying
from testing.oracle import (
    expected_answer,
    unique_prompt,
)
from testing.sse import stream_events
from testing.stack import LocalStack

# A provider as people meet one: 400 ms to the first token, then 40 tokens/s.
SIMULATOR_ENV = {"SIM_TTFT_MS": "400", "SIM_TOKENS_PER_SECOND": "40"}
# Per-user limits out of the way: one bench user starts every chat.
APP_ENV = {"RATE_LIMIT_PER_MINUTE": "1000000", "MAX_CONCURRENT_CHATS": "1000000"}
MAX_TOKENS = 300


@dataclass(frozen=True)
class Level:
    chats: int
    first_delta_margin_s: float  # goal: first delta p95 <= direct p95 + this
    completed_ratio: float | None  # goal: completed p95 <= this x direct done p95


SIZES: dict[str, dict[str, Any]] = {
    "tiny": {
        "levels": [Level(3, 0.5, 1.5), Level(5, 1.5, None)],
        "backlog_chats": 3,
        "probes": 1,
        "chat_deadline_s": 90.0,  # a stuck chat is reported well within the smoke test's time
    },
    "full": {
        "levels": [Level(100, 0.5, 1.5), Level(200, 1.5, None)],
        "backlog_chats": 100,
        "probes": 5,
        "chat_deadline_s": 600.0,
    },
}
BACKLOG_TOKENS = 1024  # the simulator's longest natural answer: ~14 chunks of 480 chars
BACKLOG_PACE = 5000.0  # tokens/s while the backlog's answers are generated
PROBE_SPACING_S = 0.5


def full_length_prompt(label: str) -> str:
    """A unique prompt whose answer runs to MAX_TOKENS (its natural end is later), so
    every chat and every direct stream streams the same 300 tokens."""
    return long_prompt(label, MAX_TOKENS + 1)[0]


@dataclass
class DurableRun:
    prompt: str
    max_tokens: int
    workflow_id: str = ""
    sent_wall: float = 0.0  # time.time() when the POST was sent
    delta_wall: float | None = None  # time.time() when the first delta with text came
    start_s: float | None = None  # POST sent -> 202
    first_s: float | None = None  # POST sent -> first delta with text
    completed_s: float | None = None  # POST sent -> `completed`
    end: str | None = None
    error: str | None = None
    deadline_s: float = 600.0  # the size's chat_deadline_s: a stuck chat is an error


@dataclass
class LevelResult:
    direct: list[StreamTimes] = field(default_factory=list)
    direct_errors: list[str] = field(default_factory=list)
    durable: list[DurableRun] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    breakdown: dict[str, Any] = field(default_factory=dict)
    floor_s: list[float] = field(default_factory=list)  # Temporal alone: start -> activity
    floor_cpu_s: dict[str, float] = field(default_factory=dict)

    @property
    def errors(self) -> list[str]:
        return [f"{r.workflow_id or r.prompt[-10:]}: {r.error}" for r in self.durable if r.error]


async def follow(gateway: httpx.AsyncClient, run: DurableRun) -> None:
    """Start the chat and follow its stream to the end, as a viewer does."""
    body = {"prompt": run.prompt, "max_tokens": run.max_tokens, "cache": False}
    run.sent_wall, sent = time.time(), time.perf_counter()
    try:
        run.workflow_id, _ = await start_chat_retrying(gateway, body, deadline_s=0)
    except StartRefusedError as err:
        run.error = str(err)[:200]
        return
    run.start_s = time.perf_counter() - sent
    try:
        async with (
            asyncio.timeout(run.deadline_s),
            contextlib.aclosing(stream_events(gateway, run.workflow_id)) as events,
        ):
            async for event in events:
                if run.first_s is None and event.event == "delta" and event.data.get("text"):
                    run.first_s, run.delta_wall = event.at - sent, event.wall
                if event.event in TERMINAL_EVENTS:
                    run.end = event.event
                    if event.event == "completed":
                        run.completed_s = event.at - sent
                    break
    except TimeoutError:
        status = await gateway.get(f"/api/workflows/{run.workflow_id}/status")
        run.error = f"no end within {run.deadline_s} s: {run.workflow_id} {status.text}"[:400]
        return
    except httpx.HTTPError as err:
        run.error = f"stream: {type(err).__name__}: {err}"[:200]
        return
    if run.end != "completed":
        run.error = f"ended {run.end or 'without a terminal event'}"


async def direct_streams(
    llm: openai.AsyncOpenAI, prompts: list[str], max_tokens: int, api: str
) -> tuple[list[StreamTimes], list[str]]:
    outcomes = await asyncio.gather(
        *(provider_stream(llm, p, max_tokens, api) for p in prompts), return_exceptions=True
    )
    times = [o for o in outcomes if isinstance(o, StreamTimes)]
    errors = [f"{type(o).__name__}: {o}"[:200] for o in outcomes if isinstance(o, BaseException)]
    return times, errors


async def verify(gateway: httpx.AsyncClient, runs: list[DurableRun]) -> None:
    """Every completed chat's chunks, read by cursor, are exactly the simulator's answer
    (after the timing, so checking costs the measurement nothing)."""
    for run in runs:
        if run.error is not None:
            continue
        chunks = await read_all_chunks(gateway, run.workflow_id)
        if "".join(c["text"] for c in chunks) != expected_answer(run.prompt, run.max_tokens):
            run.error = f"its {len(chunks)} chunks are not the answer"


async def run_level(
    stack: LocalStack,
    gateway: httpx.AsyncClient,
    llm: openai.AsyncOpenAI,
    api: str,
    n: int,
    deadline_s: float,
) -> LevelResult:
    result = LevelResult()
    log(f"load: {n} streams straight to the simulator …")
    prompts = [full_length_prompt(f"Direct load {n}, chat {i}") for i in range(n)]
    result.direct, result.direct_errors = await direct_streams(llm, prompts, MAX_TOKENS, api)
    await asyncio.sleep(2)
    log(f"load: {n} chats through durable-chat …")
    result.durable = [
        DurableRun(
            full_length_prompt(f"Durable load {n}, chat {i}"), MAX_TOKENS, deadline_s=deadline_s
        )
        for i in range(n)
    ]
    started = time.monotonic()
    with ProcessSampler(lambda: stack_processes(stack), interval_s=0.5) as sampler:
        await asyncio.gather(*(follow(gateway, run) for run in result.durable))
    result.wall_s = round(time.monotonic() - started, 2)
    result.cpu_s = by_kind(sampler.cpu_seconds())
    result.breakdown = await first_token_breakdown(stack, result.durable)
    await verify(gateway, result.durable)
    await asyncio.sleep(2)
    log(f"load: {n} workflows of a chat's shape, Temporal alone …")
    result.floor_s, result.floor_cpu_s = await temporal_floor(stack, n)
    return result


async def temporal_floor(stack: LocalStack, n: int) -> tuple[list[float], dict[str, float]]:
    """N FirstActivityWorkflows started together: start sent -> the activity that would
    call the provider starts (wall clock, one machine), and the CPU it took."""
    async with floor_workers(stack) as (task_queue, roots):
        client = await Client.connect(stack.temporal_address)

        async def one() -> float:
            sent = time.time()
            handle = await client.start_workflow(
                FirstActivityWorkflow.run,
                id=f"bench-first-{uuid.uuid4()}",
                task_queue=task_queue,
            )
            return await handle.result() - sent

        with ProcessSampler(lambda: roots, interval_s=0.5) as sampler:
            delays = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(n))), 300)
    return delays, by_kind(sampler.cpu_seconds())


def by_kind(cpu: dict[str, float]) -> dict[str, float]:
    """CPU seconds summed per kind of process (`worker-2` -> `worker`)."""
    kinds: dict[str, float] = {}
    for name, seconds in cpu.items():
        kind = name.rstrip("0123456789").rstrip("-")
        kinds[kind] = round(kinds.get(kind, 0.0) + seconds, 1)
    return dict(sorted(kinds.items()))


async def checkpoint_backlog(db: asyncpg.Pool, workflow_ids: list[str]) -> dict[str, int]:
    """How far the backlog chats are: still before their answer, checkpointing, and the
    chunks those still have to save."""
    row = await db.fetchrow(
        """
        SELECT count(*) FILTER (WHERE g.stage IN ('queued', 'validating', 'generating'))
                 AS generating,
               count(*) FILTER (WHERE g.stage = 'checkpointing') AS checkpointing,
               coalesce(sum(g.total_chunks - (SELECT count(*) FROM chunks c
                  WHERE c.workflow_id = g.workflow_id AND c.run_id = g.answer_run_id))
                 FILTER (WHERE g.stage = 'checkpointing'), 0) AS chunks_waiting
        FROM generations g WHERE g.workflow_id = ANY($1::text[])
        """,
        workflow_ids,
    )
    assert row is not None
    return {k: int(row[k]) for k in ("generating", "checkpointing", "chunks_waiting")}


async def probe(
    gateway: httpx.AsyncClient, llm: openai.AsyncOpenAI, api: str, i: int, deadline_s: float
) -> tuple[DurableRun, list[StreamTimes], list[str]]:
    """One new chat and, started at the same moment, one direct stream."""
    run = DurableRun(
        full_length_prompt(f"Probe {i} during the backlog"), MAX_TOKENS, deadline_s=deadline_s
    )
    prompt = full_length_prompt(f"Direct probe {i} during the backlog")
    _, (times, errors) = await asyncio.gather(
        follow(gateway, run), direct_streams(llm, [prompt], MAX_TOKENS, api)
    )
    return run, times, errors


async def run_backlog(
    stack: LocalStack,
    gateway: httpx.AsyncClient,
    llm: openai.AsyncOpenAI,
    api: str,
    chats: int,
    probes: int,
    deadline_s: float,
) -> dict[str, Any]:
    """New chats (and direct requests beside them) while `chats` others checkpoint.

    The backlog's answers are long (900+ tokens) and come fast; the probes start, one
    every PROBE_SPACING_S, as soon as every backlog chat has its answer and chunks are
    still waiting to be saved (or once half of all its chunks wait)."""
    log(f"load: a backlog of {chats} chats checkpointing, then {probes} new chats …")
    backlog = []
    expected_chunks = 0
    for i in range(chats):
        prompt, reply = long_prompt(f"Backlog chat {i}", 900)
        backlog.append(DurableRun(prompt, BACKLOG_TOKENS, deadline_s=deadline_s))
        expected_chunks += len(
            split_into_chunks("".join(reply.tokens), Settings().chunk_target_chars)
        )
    async with (
        httpx.AsyncClient(base_url=stack.simulator_url, timeout=30) as sim,
        asyncpg.create_pool(stack.database_url, min_size=1, max_size=2) as db,
    ):
        (await sim.post("/sim/pace", json={"tokens_per_second": BACKLOG_PACE})).raise_for_status()
        try:
            followers = [asyncio.create_task(follow(gateway, run)) for run in backlog]
            deadline = time.monotonic() + 300
            ids: list[str] = []
            state = {"generating": chats, "checkpointing": 0, "chunks_waiting": 0}
            while time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                ids = [r.workflow_id for r in backlog if r.workflow_id]
                if len(ids) < chats:
                    continue
                state = await checkpoint_backlog(db, ids)
                if state["chunks_waiting"] * 2 >= expected_chunks or (
                    state["generating"] == 0 and state["chunks_waiting"] > 0
                ):
                    break
        finally:
            await sim.delete("/sim/pace")  # the probes stream at the provider's usual pace
        log(f"load: backlog {state} of {expected_chunks} chunks; probes …")
        at_probe: list[dict[str, int]] = []
        tasks = []
        for i in range(probes):
            at_probe.append(await checkpoint_backlog(db, ids))
            tasks.append(asyncio.create_task(probe(gateway, llm, api, i, deadline_s)))
            await asyncio.sleep(PROBE_SPACING_S)
        outcomes = await asyncio.gather(*tasks)
        await asyncio.gather(*followers)
    probe_runs = [run for run, _, _ in outcomes]
    await verify(gateway, probe_runs)
    await verify(gateway, backlog)
    return {
        "probes": probe_runs,
        "direct": [t for _, times, _ in outcomes for t in times],
        "direct_errors": [e for _, _, errors in outcomes for e in errors],
        "at_probe": at_probe,
        "expected_chunks": expected_chunks,
        "backlog_errors": [r.error for r in backlog if r.error],
    }


def _p95(values: list[float]) -> float | None:
    value = percentile(values, 95)
    return None if value is None else round(value, 3)


def level_figures(level: Level, result: LevelResult) -> list[Figure]:
    n = level.chats
    first = [r.first_s for r in result.durable if r.first_s is not None]
    done = [r.completed_s for r in result.durable if r.completed_s is not None]
    direct_first = _p95([t.first_s for t in result.direct])
    direct_done = _p95([t.done_s for t in result.direct])
    first_p95 = _p95(first) if len(first) == n else None
    figures = [
        Figure(
            f"{n} chats: first text delta p95",
            first_p95,
            direct_first,
            "s",
            f"≤ direct + {level.first_delta_margin_s} s",
            None
            if first_p95 is None or direct_first is None
            else first_p95 <= direct_first + level.first_delta_margin_s,
            "direct first token p95",
        )
    ]
    if level.completed_ratio is not None:
        done_p95 = _p95(done) if len(done) == n else None
        figures.append(
            Figure(
                f"{n} chats: answer completed p95",
                done_p95,
                direct_done,
                "s",
                f"≤ {level.completed_ratio} x direct done",
                None
                if done_p95 is None or direct_done is None
                else done_p95 <= level.completed_ratio * direct_done,
                "direct stream done p95",
            )
        )
    floor_p95 = _p95(result.floor_s)
    figures.append(
        Figure(
            f"{n} chats: Temporal alone, start -> LLM activity starts p95",
            floor_p95,
            level.first_delta_margin_s,
            "s",
            "— (the floor under the first delta's overhead)",
            None,
            "the margin over direct the first-delta goal allows",
        )
    )
    errors = len(result.errors)
    figures.append(
        Figure(
            f"{n} chats: errors",
            errors,
            len(result.direct_errors),
            "",
            "0",
            errors == 0,
            "direct streams that failed",
        )
    )
    return figures


def level_details(result: LevelResult) -> dict[str, Any]:
    def of(values: list[float | None]) -> dict[str, Any]:
        return summary([v for v in values if v is not None], 1, 3)

    return {
        "direct_first_token_s": of([t.first_s for t in result.direct]),
        "direct_done_s": of([t.done_s for t in result.direct]),
        "start_request_s": of([r.start_s for r in result.durable]),
        "first_text_delta_s": of([r.first_s for r in result.durable]),
        "completed_s": of([r.completed_s for r in result.durable]),
        "wall_s": result.wall_s,
        "first_text_delta_breakdown_ms": result.breakdown,
        "temporal_alone_start_to_llm_activity_s": of(list(result.floor_s)),
        "temporal_alone_cpu_s_by_process": result.floor_cpu_s,
        "cpu_s_by_process": result.cpu_s,
        "errors": result.errors[:10],
        "direct_errors": result.direct_errors[:10],
    }


def backlog_figure(backlog: dict[str, Any]) -> Figure:
    probes: list[DurableRun] = backlog["probes"]
    direct: list[StreamTimes] = backlog["direct"]
    firsts = [r.first_s for r in probes if r.first_s is not None and r.error is None]
    worst = round(max(firsts), 3) if len(firsts) == len(probes) and firsts else None
    direct_worst = round(max(t.first_s for t in direct), 3) if direct else None
    return Figure(
        f"new chat during a checkpoint backlog: first text delta, worst of {len(probes)}",
        worst,
        direct_worst,
        "s",
        "≤ direct + 0.5 s",
        None if worst is None or direct_worst is None else worst <= direct_worst + 0.5,
        "direct first token, started at the same moment (worst)",
    )


async def measure(stack: LocalStack, size: str) -> Report:
    config = SIZES[size]
    api = worker_api()
    llm = provider_client(stack.simulator_url)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    figures: list[Figure] = []
    details: dict[str, Any] = {"max_tokens": MAX_TOKENS, "provider_api": api}
    async with gateway_client(stack, timeout_s=120, limits=limits) as gateway:
        # warm-up: one chat and one direct stream (connections, the workers' caches)
        await follow(gateway, DurableRun(unique_prompt("Load warm-up"), 20))
        await provider_stream(llm, unique_prompt("Direct warm-up"), 20, api)
        for level in config["levels"]:
            result = await run_level(
                stack, gateway, llm, api, level.chats, config["chat_deadline_s"]
            )
            figures += level_figures(level, result)
            details[f"{level.chats}_chats"] = level_details(result)
            await asyncio.sleep(3)
        backlog = await run_backlog(
            stack,
            gateway,
            llm,
            api,
            config["backlog_chats"],
            config["probes"],
            config["chat_deadline_s"],
        )
    figures.append(backlog_figure(backlog))
    details["backlog"] = {
        "chats": config["backlog_chats"],
        "chunks_in_backlog": backlog["expected_chunks"],
        "at_each_probe": backlog["at_probe"],
        "probe_first_text_delta_s": [r.first_s for r in backlog["probes"]],
        "probe_errors": [r.error for r in backlog["probes"] if r.error],
        "direct_first_token_s": [round(t.first_s, 3) for t in backlog["direct"]],
        "backlog_errors": backlog["backlog_errors"][:10],
    }
    await llm.close()
    return Report(
        "load",
        size,
        figures,
        "the same number of streams straight to the simulator (openai client), same run",
        details,
    )


def main(argv: list[str] | None = None) -> int:
    return run_benchmark("load", __doc__, SIMULATOR_ENV, measure, argv, app_env=APP_ENV)


if __name__ == "__main__":
    raise SystemExit(main())
