"""Answer cache: time from `POST /api/workflows/start` to the last chunk readable,
for a cache hit, beside the miss that filled the cache (measured in the same run).

A miss calls the LLM (the simulator at its default, realistic speed: 400 ms to the
first token, 40 tokens/s); a hit is an identical request answered from PostgreSQL
through a ChatStreamingWorkflow with no LLM call. "Readable" means every chunk can be
read through `GET /api/workflows/{id}/chunks` (the cursor the UI and clients follow).
Goal: hit p50 under 100 ms on this machine (the seed's Redis design: 0.5 s).

    .venv/bin/python -m bench.cache_hit --size full
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import httpx

from bench.stack import gateway_client, running_stack, stop_on_signals
from testing.chats import start_chat, wait_status
from testing.oracle import unique_prompt
from testing.stack import LocalStack

SIZES = {"tiny": (2, 60), "full": (20, 300)}  # (pairs of requests, max_tokens)


async def _time_to_all_chunks(
    client: httpx.AsyncClient, prompt: str, max_tokens: int, total: int | None = None
) -> tuple[float, bool, int]:
    """Seconds from the POST to every chunk read through the cursor (`total` chunks when
    known, else until the chat reports completed), whether it was a hit, chunks read."""
    started = time.perf_counter()
    workflow_id = await start_chat(client, prompt=prompt, max_tokens=max_tokens)
    cursor = 0
    while True:
        page = (
            await client.get(f"/api/workflows/{workflow_id}/chunks", params={"from_id": cursor})
        ).json()
        cursor = page["next_from_id"]
        if total is not None and cursor >= total:
            break
        if total is None and page["status"] == "completed" and not page["chunks"]:
            break
        if not page["chunks"]:
            await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - started
    # the chat closes a moment after its last chunk
    status = await wait_status(client, workflow_id, {"completed"}, timeout_s=30)
    return elapsed, bool(status["cache_hit"]), cursor


async def measure(stack: LocalStack, pairs: int, max_tokens: int) -> dict[str, object]:
    misses: list[float] = []
    hits: list[float] = []
    async with gateway_client(stack, 120) as client:
        for _ in range(pairs):
            prompt = unique_prompt("Cache benchmark: explain durable execution")
            miss, miss_hit, total = await _time_to_all_chunks(client, prompt, max_tokens)
            hit, hit_hit, _ = await _time_to_all_chunks(client, prompt, max_tokens, total)
            assert not miss_hit and hit_hit, "expected a miss then a hit"
            misses.append(miss)
            hits.append(hit)
    hit_p50 = statistics.median(hits) * 1000
    return {
        "benchmark": "cache_hit",
        "pairs": pairs,
        "max_tokens": max_tokens,
        "miss_p50_ms": round(statistics.median(misses) * 1000, 1),
        "hit_p50_ms": round(hit_p50, 1),
        "hit_p95_ms": round(sorted(hits)[max(0, int(len(hits) * 0.95) - 1)] * 1000, 1),
        "hit_max_ms": round(max(hits) * 1000, 1),
        "goal_hit_p50_ms": 100,
        "goal_met": hit_p50 < 100,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    args = parser.parse_args()
    pairs, max_tokens = SIZES[args.size]
    stop_on_signals()  # SIGTERM (run_all) still stops the stack
    with running_stack({}, workers=2) as stack:
        result = asyncio.run(measure(stack, pairs, max_tokens))
    print(f"{'figure':<44} {'measured':>10} {'baseline (miss)':>16} {'goal':>8} met?")
    print(
        f"{'start -> all chunks readable, hit p50 (ms)':<44} {result['hit_p50_ms']:>10} "
        f"{result['miss_p50_ms']:>16} {'< 100':>8} {'yes' if result['goal_met'] else 'NO'}"
    )
    print(f"{'hit p95 / max (ms)':<44} {result['hit_p95_ms']:>10} / {result['hit_max_ms']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
