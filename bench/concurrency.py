"""100 concurrent chats of 50 chunks each: checkpoints per second, time to fully
checkpointed, peak worker memory; beside them the same chats without Temporal.

Measured: all chats started at once through the gateway (`POST /start`), on the stack's
workers (2, as `make up` runs) with the CHECKPOINT_WINDOW and CHUNK_TARGET_CHARS in
force; each chat's `max_tokens` is chosen so its answer splits into exactly 50 chunks.
The simulator is fast (generation is not the bottleneck). From PostgreSQL timestamps:
- checkpoints/s: chunk rows saved / (last chunk row - first `checkpointing` event);
- per chat, end of generation → fully checkpointed: its `checkpointing` stage event
  to its last chunk row (p50, p95);
- peak resident memory of the worker processes (psutil, sampled every 0.2 s).
Baseline ("for scale", same run, same answers): the seed's MVP, one asyncio task per
chat in one process writing the same rows with the same queries straight to
PostgreSQL (bench/mvp.py, into schema `bench_mvp`), no Temporal, no durability.
Goal: at least 300 checkpoints/s.

    .venv/bin/python -m bench.concurrency --size full
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
from temporalio.client import Client

from bench.chats import long_prompt, max_tokens_for_chunks
from bench.figures import Figure, Report
from bench.mvp import SCHEMA, create_schema
from bench.runner import run_benchmark
from bench.sampler import ProcessSampler
from bench.stack import gateway_client, log, replays_logged, stack_processes
from bench.stats import percentile, summary
from bench.temporal_floor import FloorRun, FloorWorkflow, floor_workers
from bench.timing import Phase, checkpoint_phases, wait_finished
from common.settings import Settings
from testing.chats import start_chat
from testing.stack import ROOT, LocalStack

# Chunks of 80 characters (the default is 480): this benchmark measures the cost of a
# checkpoint, whatever its size, and the simulator's answers end naturally by ~1,024
# tokens, so 50 chunks of 120 characters (the figures before 2026-12) no longer fit;
# each prompt is one whose natural answer is long enough to be cut at 50 chunks.
APP_ENV = {"CHUNK_TARGET_CHARS": "80"}
NATURAL_TOKENS_AT_LEAST = 800
SIMULATOR_ENV = {"SIM_TTFT_MS": "20", "SIM_TOKENS_PER_SECOND": "5000"}
SIZES = {
    "tiny": {"chats": 5, "chunks": 10, "timeout_s": 90},
    "full": {"chats": 100, "chunks": 50, "timeout_s": 1200},
}
GOAL_PER_S = 300.0


def rss_of(pid: int) -> int:
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return 0


def figures_of(phases: dict[str, Phase], first_sent: float) -> dict[str, Any]:
    started = [p.started for p in phases.values() if p.started is not None]
    finished = [p.finished for p in phases.values() if p.finished is not None]
    per_chat = [p.seconds for p in phases.values() if p.seconds is not None]
    chunks = sum(p.chunks for p in phases.values())
    window = max(finished) - min(started)
    return {
        "chats": len(phases),
        "chunks": chunks,
        "chunks_per_chat": sorted({p.chunks for p in phases.values()}),
        "checkpoint_window_s": round(window, 2),
        "checkpoints_per_s": round(chunks / window, 1) if window > 0 else None,
        "fully_checkpointed_after_generation_s": summary(per_chat, 1, 2),
        "first_start_to_last_chunk_s": round(max(finished) - first_sent, 2),
        "_per_chat": per_chat,
    }


async def temporal_run(
    stack: LocalStack, db: asyncpg.Pool, specs: list[dict[str, Any]], timeout_s: float
) -> dict[str, Any]:
    workers = stack.live_workers()
    rss_at_start = max(rss_of(w.pid) for w in workers)
    replays_before = replays_logged(stack)
    with ProcessSampler(lambda: stack_processes(stack)) as sampler:
        limits = httpx.Limits(max_connections=len(specs) + 10)
        async with gateway_client(stack, 120, limits=limits) as gw:
            first_sent = time.time()
            ids = await asyncio.gather(
                *(start_chat(gw, prompt=s["prompt"], max_tokens=s["max_tokens"]) for s in specs)
            )
            started_s = time.time() - first_sent
        log(f"  {len(ids)} chats started through the gateway in {started_s:.1f} s; waiting …")
        await wait_finished(db, list(ids), timeout_s, interval_s=1.0)
    result = figures_of(await checkpoint_phases(db, list(ids)), first_sent)
    result.update(
        {
            "post_start_all_s": round(started_s, 2),
            "peak_rss_one_worker_mib": max(sampler.peak_mib(w.name) for w in workers),
            "peak_rss_all_workers_mib": sampler.peak_total_mib("worker"),
            "rss_at_start_one_worker_mib": round(rss_at_start / 2**20, 1),
            "workers": len(workers),
            "cpu_seconds": sampler.cpu_seconds(),
            "cpu_ms_per_chunk": round(
                1000 * sum(sampler.cpu_seconds().values()) / max(1, result["chunks"]), 1
            ),
            "history_replays_logged": replays_logged(stack) - replays_before,
        }
    )
    return result


async def mvp_run(
    stack: LocalStack, db: asyncpg.Pool, specs: list[dict[str, Any]], timeout_s: float
) -> dict[str, Any]:
    await create_schema(db)
    mvp_specs = [{**s, "workflow_id": f"mvp-{uuid.uuid4()}"} for s in specs]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(mvp_specs, f)
        specs_file = Path(f.name)
    first_sent = time.time()
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.mvp",
        "--dsn",
        stack.database_url,
        "--simulator-url",
        f"{stack.simulator_url}/v1",
        "--specs",
        str(specs_file),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )

    def watched() -> dict[str, int]:
        return {"mvp": child.pid, **stack_processes(stack)}

    try:
        with ProcessSampler(watched) as sampler:
            out, _ = await asyncio.wait_for(child.communicate(), timeout_s)
    finally:
        if child.returncode is None:  # only the child this benchmark started
            child.kill()
            await child.wait()
        await asyncio.to_thread(specs_file.unlink, missing_ok=True)
    if child.returncode != 0:
        raise RuntimeError(f"bench.mvp exited with {child.returncode}")
    reported = json.loads(out.decode().strip().splitlines()[-1])
    if reported["errors"]:
        raise RuntimeError(f"bench.mvp chats failed: {reported['errors'][:3]}")
    ids = [s["workflow_id"] for s in mvp_specs]
    await wait_finished(db, ids, 10, schema=SCHEMA)
    result = figures_of(await checkpoint_phases(db, ids, schema=SCHEMA), first_sent)
    cpu = sampler.cpu_seconds()
    cpu["mvp"] = round(reported.get("cpu_s", cpu.get("mvp", 0.0)), 1)
    result.update(
        {
            "peak_rss_mib": sampler.peak_mib("mvp"),
            "cpu_seconds": cpu,
            "cpu_ms_per_chunk": round(1000 * sum(cpu.values()) / max(1, result["chunks"]), 1),
        }
    )
    return result


async def floor_run(
    stack: LocalStack, chats: int, chunks: int, window: int, timeout_s: float, local: bool = False
) -> dict[str, Any]:
    """The same number of workflows, each `chunks` no-op (regular) activities through the
    same window, on the same dev server with as many worker processes
    (bench.temporal_floor): what Temporal alone allows. Activities/s = chats x chunks /
    (first start → last workflow result), a window that also holds each workflow's start
    and first task, so it slightly understates the rate against the chats' figure."""
    async with floor_workers(stack) as (task_queue, roots):
        client = await Client.connect(stack.temporal_address)
        with ProcessSampler(lambda: roots) as sampler:
            first = time.time()
            handles = await asyncio.gather(
                *(
                    client.start_workflow(
                        FloorWorkflow.run,
                        FloorRun(chunks=chunks, window=window, local=local),
                        id=f"bench-floor-{uuid.uuid4()}",
                        task_queue=task_queue,
                    )
                    for _ in range(chats)
                )
            )
            done = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), timeout_s)
            elapsed = time.time() - first
    activities = sum(done)
    cpu = sampler.cpu_seconds()
    return {
        "workflows": chats,
        "activities": activities,
        "seconds": round(elapsed, 2),
        "activities_per_s": round(activities / elapsed, 1),
        "cpu_seconds": cpu,
        "cpu_ms_per_activity": round(1000 * sum(cpu.values()) / max(1, activities), 1),
        "temporal_cpu_ms_per_activity": round(
            1000 * cpu.get("temporal", 0.0) / max(1, activities), 1
        ),
    }


async def measure(stack: LocalStack, size: str) -> Report:
    chats, chunks, timeout_s = (SIZES[size][k] for k in ("chats", "chunks", "timeout_s"))
    settings = Settings()
    target = settings.chunk_target_chars
    run = uuid.uuid4().hex[:8]
    specs = []
    for i in range(chats):
        prompt, _ = long_prompt(f"Concurrency benchmark {run}, chat {i}", NATURAL_TOKENS_AT_LEAST)
        max_tokens, _ = max_tokens_for_chunks(prompt, chunks, target)
        specs.append({"prompt": prompt, "max_tokens": max_tokens, "chunk_target_chars": target})
    db = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=4)
    try:
        log(f"  {chats} chats x {chunks} chunks through the gateway, Temporal and the workers")
        temporal = await temporal_run(stack, db, specs, timeout_s)
        log(f"  the same {chats} chats without Temporal (bench.mvp)")
        mvp = await mvp_run(stack, db, specs, timeout_s)
        log(f"  Temporal alone: {chats} workflows x {chunks} no-op activities")
        floor = await floor_run(stack, chats, chunks, settings.checkpoint_window, timeout_s)
        log("  the same with local activities")
        floor_local = await floor_run(
            stack, chats, chunks, settings.checkpoint_window, timeout_s, local=True
        )
    finally:
        await db.close()

    t_chat, m_chat = temporal.pop("_per_chat"), mvp.pop("_per_chat")
    cores = os.cpu_count() or 1

    def p(values: list[float], q: float) -> float | None:
        value = percentile(values, q)
        return None if value is None else round(value, 2)

    figures = [
        Figure(
            f"chunk checkpoints per second, {chats} chats x {chunks} chunks",
            temporal["checkpoints_per_s"],
            mvp["checkpoints_per_s"],
            "/s",
            "≥ 300/s",
            (temporal["checkpoints_per_s"] or 0) >= GOAL_PER_S,
            "MVP: asyncio tasks writing rows directly",
        ),
        Figure(
            f"Temporal alone: no-op activities per second, {chats} workflows x {chunks}",
            floor["activities_per_s"],
            temporal["checkpoints_per_s"],
            "/s",
            baseline_is="the chats' checkpoints/s (a bound on them, not a result)",
        ),
        Figure(
            f"Temporal alone, local activities: per second, {chats} workflows x {chunks}",
            floor_local["activities_per_s"],
            floor["activities_per_s"],
            "/s",
            baseline_is="Temporal alone, regular activities",
        ),
        Figure(
            "Temporal alone: CPU per activity (dev server + floor workers)",
            floor["cpu_ms_per_activity"],
            mvp["cpu_ms_per_chunk"],
            "ms",
            baseline_is="MVP, per chunk",
        ),
        Figure(
            "Temporal alone: dev server CPU per activity",
            floor["temporal_cpu_ms_per_activity"],
            None,
            "ms",
        ),
        Figure(
            "end of generation → fully checkpointed, p50",
            p(t_chat, 50),
            p(m_chat, 50),
            "s",
        ),
        Figure(
            "end of generation → fully checkpointed, p95",
            p(t_chat, 95),
            p(m_chat, 95),
            "s",
        ),
        Figure(
            "CPU per chunk checkpointed (every process of the run, generation included)",
            temporal["cpu_ms_per_chunk"],
            mvp["cpu_ms_per_chunk"],
            "ms/chunk",
            baseline_is="MVP",
        ),
        Figure(
            f"projected ceiling on {cores} free cores ({cores} s / CPU per chunk)",
            round(cores * 1000 / temporal["cpu_ms_per_chunk"], 1),
            round(cores * 1000 / mvp["cpu_ms_per_chunk"], 1),
            "/s",
            baseline_is="MVP",
        ),
        Figure(
            "peak worker memory (RSS, largest worker)",
            temporal["peak_rss_one_worker_mib"],
            mvp["peak_rss_mib"],
            "MiB",
            baseline_is="MVP process",
        ),
        Figure(
            f"peak worker memory (RSS, all {temporal['workers']} workers)",
            temporal["peak_rss_all_workers_mib"],
            mvp["peak_rss_mib"],
            "MiB",
            baseline_is="MVP process",
        ),
    ]
    details = {
        "chats": chats,
        "chunks_per_chat": chunks,
        "chunk_target_chars": target,
        "checkpoint_window": settings.checkpoint_window,
        "temporal": temporal,
        "mvp": mvp,
        "temporal_alone": floor,
        "temporal_alone_local_activities": floor_local,
    }
    return Report(
        "concurrency",
        size,
        figures,
        "the seed's MVP: the same chats as asyncio tasks writing the same rows directly "
        "(no Temporal), same run",
        details,
    )


def main(argv: list[str] | None = None) -> int:
    return run_benchmark("concurrency", __doc__, SIMULATOR_ENV, measure, argv, app_env=APP_ENV)


if __name__ == "__main__":
    raise SystemExit(main())
