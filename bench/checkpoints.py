"""Checkpoint phase of a 100-chunk answer, against a one-at-a-time save_chunk loop.

Measured: a chat started through the gateway (so with the CHECKPOINT_WINDOW and
CHUNK_TARGET_CHARS in force), its `max_tokens` chosen so that the simulator's answer
splits into exactly 100 chunks. The checkpoint phase runs from the chat's
`checkpointing` stage event (written once the answer is generated) to its last chunk
row, both timestamped by PostgreSQL (`created_at`). Baseline, in the same run and
interleaved: the same answer — the very request the gateway builds (taken from a
warm-up chat's history), same prompt and max_tokens, answer cache off — started
directly through the Temporal client (with the gateway's start options) with
`checkpoint_window=1`, i.e. one `save_chunk` at a time. Goals: at most 0.15 of the
baseline, under 15 ms per chunk.

    .venv/bin/python -m bench.checkpoints --size full
"""

from __future__ import annotations

import dataclasses
from typing import Any

import asyncpg
from temporalio.client import Client

from bench.chats import chat_request_of, long_prompt, max_tokens_for_chunks
from bench.figures import Figure, Report
from bench.runner import run_benchmark
from bench.stack import gateway_client, log, replays_logged
from bench.stats import percentile
from bench.timing import checkpoint_phases, wait_finished
from common.settings import Settings
from testing.chats import start_chat, start_chat_directly
from testing.oracle import unique_prompt
from testing.stack import LocalStack

# Generation fast, so each repetition is quick; it ends before the measured phase.
# Small chunks (the default is 480): this benchmark measures the cost of a checkpoint,
# whatever the size of one, and the simulator's answers end naturally by ~1,024 tokens
# (~6,700 characters), so 100 chunks need small ones (the figures
# before 2026-12 used 120, when its answers ran to max_tokens).
APP_ENV = {"CHUNK_TARGET_CHARS": "40"}
NATURAL_TOKENS_AT_LEAST = 900  # 100 chunks of 40 characters: ~750 tokens, cut before the end
SIMULATOR_ENV = {"SIM_TTFT_MS": "20", "SIM_TOKENS_PER_SECOND": "5000"}
SIZES = {"tiny": {"chunks": 20, "reps": 1}, "full": {"chunks": 100, "reps": 7}}
GOAL_RATIO = 0.15
GOAL_MS_PER_CHUNK = 15.0


async def one_phase(
    db: asyncpg.Pool, workflow_id: str, timeout_s: float = 120
) -> tuple[float, int]:
    await wait_finished(db, [workflow_id], timeout_s)
    phase = (await checkpoint_phases(db, [workflow_id]))[workflow_id]
    if phase.seconds is None:
        raise RuntimeError(f"no checkpoint phase for {workflow_id}: {phase}")
    return phase.seconds, phase.chunks


async def measure(stack: LocalStack, size: str) -> Report:
    chunks, reps = SIZES[size]["chunks"], SIZES[size]["reps"]
    settings = Settings()
    target = settings.chunk_target_chars
    window = settings.checkpoint_window
    client = await Client.connect(stack.temporal_address)
    db = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=2)
    windowed: list[float] = []
    one_at_a_time: list[float] = []
    counts: set[int] = set()
    async with gateway_client(stack) as gateway:

        async def through_gateway(prompt: str, max_tokens: int) -> tuple[float, int]:
            workflow_id = await start_chat(gateway, prompt=prompt, max_tokens=max_tokens)
            return await one_phase(db, workflow_id)

        # The gateway's own request, from a warm-up chat: the baseline differs from it
        # only in prompt and max_tokens (as each measured chat) and the window.
        prompt = unique_prompt("Checkpoint warm-up")
        max_tokens = max_tokens_for_chunks(prompt, 10, target)[0]
        warmup = await start_chat(gateway, prompt=prompt, max_tokens=max_tokens)
        await one_phase(db, warmup)
        template = await chat_request_of(client, warmup)

        async def one_by_one(prompt: str, max_tokens: int) -> tuple[float, int]:
            changes: dict[str, Any] = {
                "prompt": prompt,
                "max_tokens": max_tokens,
                "checkpoint_window": 1,
            }
            if hasattr(template, "use_cache"):
                changes["use_cache"] = False  # generate, as the measured chat does
            handle = await start_chat_directly(
                client,
                dataclasses.replace(template, **changes),
                user=template.user_id,
                task_queue=settings.task_queue,
            )
            return await one_phase(db, handle.id)

        for i in range(reps):
            prompt, _ = long_prompt(f"Checkpoint phase, repetition {i}", NATURAL_TOKENS_AT_LEAST)
            max_tokens, expected = max_tokens_for_chunks(prompt, chunks, target)
            # alternate which goes first, so drift on a shared machine hits both alike
            order = [through_gateway, one_by_one] if i % 2 == 0 else [one_by_one, through_gateway]
            results = {run.__name__: await run(prompt, max_tokens) for run in order}
            (w_s, w_n), (b_s, b_n) = results["through_gateway"], results["one_by_one"]
            if w_n != b_n:
                raise RuntimeError(f"not the same answer: {w_n} and {b_n} chunks")
            if w_n != expected:
                log(f"  note: {w_n} chunks, not {expected} (the simulator's text changed?)")
            counts.add(w_n)
            windowed.append(w_s)
            one_at_a_time.append(b_s)
            log(
                f"  rep {i + 1}/{reps}: {w_n} chunks, window {window}: {w_s * 1000:.0f} ms, "
                f"window 1: {b_s * 1000:.0f} ms"
            )
    await db.close()

    n = round(sum(counts) / len(counts))
    p50_w = percentile(windowed, 50)
    p50_b = percentile(one_at_a_time, 50)
    assert p50_w is not None and p50_b is not None
    ratios = [w / b for w, b in zip(windowed, one_at_a_time, strict=True)]
    ratio = percentile(ratios, 50)
    assert ratio is not None
    per_chunk = 1000 * p50_w / n
    figures = [
        Figure(
            f"checkpoint phase, {n} chunks, window {window}, p50",
            round(1000 * p50_w, 1),
            round(1000 * p50_b, 1),
            "ms",
            "≤ 0.15 of baseline",
            ratio <= GOAL_RATIO,
            "same answer, checkpoint_window=1, p50",
        ),
        Figure(
            "phase / one-at-a-time phase, p50 of pairs",
            round(ratio, 3),
            1.0,
            "x",
            "≤ 0.15",
            ratio <= GOAL_RATIO,
        ),
        Figure(
            "per chunk (phase p50 / chunks)",
            round(per_chunk, 1),
            round(1000 * p50_b / n, 1),
            "ms/chunk",
            "< 15 ms",
            per_chunk < GOAL_MS_PER_CHUNK,
            "one at a time",
        ),
    ]
    details: dict[str, Any] = {
        "repetitions": reps,
        "chunks_per_answer": n,
        "chunks_per_answer_seen": sorted(counts),
        "checkpoint_window": window,
        "chunk_target_chars": target,
        "phase_ms": [round(1000 * x, 1) for x in windowed],
        "baseline_phase_ms": [round(1000 * x, 1) for x in one_at_a_time],
        "ratios": [round(x, 3) for x in ratios],
        "phase_ms_min_max": [round(1000 * min(windowed), 1), round(1000 * max(windowed), 1)],
        "history_replays_logged": replays_logged(stack),
    }
    return Report(
        "checkpoints",
        size,
        figures,
        "the same answer checkpointed one save_chunk at a time (checkpoint_window=1)",
        details,
    )


def main(argv: list[str] | None = None) -> int:
    return run_benchmark("checkpoints", __doc__, SIMULATOR_ENV, measure, argv, app_env=APP_ENV)


if __name__ == "__main__":
    raise SystemExit(main())
