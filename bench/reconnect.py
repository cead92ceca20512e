"""Reconnect with Last-Event-ID: time to the first missed event.

Measured, on a chat whose answer is streaming: a viewer connects, reads the SSE stream
until it is live (event N, the newest at connect time), drops the connection, misses
events while away (~0.1 s, at least one more event in the log before it comes back),
then reconnects with `Last-Event-ID: N`; the
figure is the time from sending that request to receiving event N+1 (checked to be
exactly N+1). Baseline, same chat and same moment: a fresh connection (no
Last-Event-ID) and the time to its first event. Goal: under 100 ms.

    .venv/bin/python -m bench.reconnect --size full
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import asyncpg
import httpx

from bench.figures import Figure, Report
from bench.runner import run_benchmark
from bench.stack import gateway_client, log
from bench.stats import percentile_ms, summary
from common.contract import TERMINAL_EVENTS
from testing.chats import start_chat
from testing.oracle import unique_prompt
from testing.sse import StreamEvent, stream_events
from testing.stack import LocalStack

# A live answer of a few seconds: deltas every 100 ms (drafts.FLUSH_INTERVAL_S).
SIMULATOR_ENV = {"SIM_TTFT_MS": "50", "SIM_TOKENS_PER_SECOND": "100"}
SIZES = {"tiny": {"reps": 3, "per_chat": 3}, "full": {"reps": 40, "per_chat": 5}}
MAX_TOKENS = 600  # ~6 s of streaming per chat
GOAL_MS = 100.0


async def first_event(
    gateway: httpx.AsyncClient, workflow_id: str, last_event_id: int | None, until_id: int
) -> tuple[float, StreamEvent, int]:
    """Connect (resuming after `last_event_id`) and read up to event `until_id` (or the
    terminal event); return (seconds to the first event, that event, the last id read)."""
    sent = time.perf_counter()
    first: StreamEvent | None = None
    last = 0
    async with (
        asyncio.timeout(60),  # a stream that stalls fails the benchmark instead of hanging it
        contextlib.aclosing(
            stream_events(gateway, workflow_id, last_event_id=last_event_id)
        ) as events,
    ):
        async for event in events:
            first = first or event
            last = event.id
            if event.id >= until_id or event.event in TERMINAL_EVENTS:
                break
    if first is None:
        raise RuntimeError(f"no event on the stream of {workflow_id}")
    return first.at - sent, first, last


async def newest_seq(db: asyncpg.Pool, workflow_id: str) -> int:
    seq = await db.fetchval("SELECT max(seq) FROM chat_events WHERE workflow_id = $1", workflow_id)
    return int(seq or 0)


async def wait_for_more(db: asyncpg.Pool, workflow_id: str, after: int) -> bool:
    """Wait until the log holds an event after `after` (the viewer has missed something)."""
    for _ in range(100):
        if await newest_seq(db, workflow_id) > after:
            return True
        await asyncio.sleep(0.02)
    return False


async def wait_cancelled(db: asyncpg.Pool, workflow_id: str, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stage = await db.fetchval(
            "SELECT stage FROM generations WHERE workflow_id = $1", workflow_id
        )
        if stage in TERMINAL_EVENTS:
            return
        await asyncio.sleep(0.1)


async def measure(stack: LocalStack, size: str) -> Report:
    reps, per_chat = SIZES[size]["reps"], SIZES[size]["per_chat"]
    resumed: list[float] = []
    fresh: list[float] = []
    exact = 0
    live = 0
    db = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=2)
    async with gateway_client(stack) as gateway:
        # warm-up: one full chat read end to end
        warm = await start_chat(gateway, prompt=unique_prompt("Reconnect warm-up"), max_tokens=30)
        await first_event(gateway, warm, None, 10**9)
        workflow_id = ""
        for i in range(reps):
            if i % per_chat == 0:
                prompt = unique_prompt(f"Reconnect chat {i}")
                workflow_id = await start_chat(gateway, prompt=prompt, max_tokens=MAX_TOKENS)
                await asyncio.sleep(0.3)  # into its streaming phase
            # Baseline: a fresh connection, time to its first event (id 1); the viewer
            # then reads on until it is live (the newest event), and its connection drops.
            newest = await newest_seq(db, workflow_id)
            fresh_s, _, seen = await first_event(gateway, workflow_id, None, newest + 1)
            fresh.append(fresh_s)
            # Away for a moment: events go on without the viewer.
            await asyncio.sleep(0.1)
            await wait_for_more(db, workflow_id, seen)
            stage = await db.fetchval(
                "SELECT stage FROM generations WHERE workflow_id = $1", workflow_id
            )
            live += stage not in TERMINAL_EVENTS
            resumed_s, event, _ = await first_event(gateway, workflow_id, seen, 1)
            resumed.append(resumed_s)
            exact += event.id == seen + 1
            log(
                f"  rep {i + 1}/{reps}: fresh {fresh_s * 1000:.1f} ms, "
                f"resume after {seen} -> {event.id} in {resumed_s * 1000:.1f} ms"
            )
        # Done with the chat still streaming: cancel it (the stack then stops at once).
        await gateway.post(f"/api/workflows/{workflow_id}/cancel")
        await wait_cancelled(db, workflow_id)
    await db.close()

    figures = [
        Figure(
            "reconnect with Last-Event-ID → first missed event, p50",
            percentile_ms(resumed, 50),
            percentile_ms(fresh, 50),
            "ms",
            "< 100 ms",
            percentile_ms(resumed, 50) < GOAL_MS,
            "fresh connection → its first event, p50",
        ),
        Figure(
            "reconnect with Last-Event-ID → first missed event, p95",
            percentile_ms(resumed, 95),
            percentile_ms(fresh, 95),
            "ms",
            "< 100 ms",
            percentile_ms(resumed, 95) < GOAL_MS,
            "fresh connection → its first event, p95",
        ),
        Figure(
            "resumed exactly at the first missed event (id N+1)",
            float(exact),
            float(reps),
            "of reps",
            "all",
            exact == reps,
            "repetitions",
        ),
    ]
    details: dict[str, Any] = {
        "repetitions": reps,
        "repetitions_on_a_live_stream": live,
        "reconnect_ms": summary(resumed, 1000),
        "fresh_connection_ms": summary(fresh, 1000),
        "max_tokens": MAX_TOKENS,
    }
    return Report(
        "reconnect",
        size,
        figures,
        "a fresh SSE connection to the same chat, time to its first event",
        details,
    )


def main(argv: list[str] | None = None) -> int:
    return run_benchmark("reconnect", __doc__, SIMULATOR_ENV, measure, argv)


if __name__ == "__main__":
    raise SystemExit(main())
