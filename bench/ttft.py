"""Time to first visible token through the gateway, against the simulator's own TTFT.

Measured: from `POST /api/workflows/start` being sent (the user presses send) to the
first `delta` event with text arriving on the chat's SSE stream (opened as soon as the POST
returns), through the real gateway, Temporal and a worker. Also reported from the
POST's return. Baseline, in the same run and interleaved: the simulator's own time to
first token, the openai client calling the simulator directly with the same kind of
request (same length and settings, another prompt) through the same API as the
workers (Responses API in background mode when the generation mode is `resume`, chat
completions otherwise).
Goal: at most 150 ms more than the baseline (median of the per-pair differences).
Also measured, interleaved with both: the same through the OpenAI-compatible API, the
official openai SDK calling the gateway's `/v1/responses` with `stream=true`, from the
create call to the first `response.output_text.delta` (docs/openai-api.md).

    .venv/bin/python -m bench.ttft --size full
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import httpx
import openai

from bench.direct import provider_client, provider_stream, worker_api
from bench.figures import Figure, Report
from bench.runner import run_benchmark
from bench.stack import gateway_client, log
from bench.stats import percentile_ms, summary
from bench.timing import first_token_breakdown
from common.contract import TERMINAL_EVENTS
from testing.chats import start_chat
from testing.keys import TEST_API_KEYS
from testing.oracle import unique_prompt
from testing.sse import StreamEvent, stream_events
from testing.stack import LocalStack

# The simulator's default time to first token (400 ms); tokens fast enough that each
# repetition ends quickly (the answer is short anyway).
SIMULATOR_ENV = {"SIM_TTFT_MS": "400", "SIM_TOKENS_PER_SECOND": "200"}
SIZES = {"tiny": {"reps": 2, "warmup": 1}, "full": {"reps": 30, "warmup": 2}}
MAX_TOKENS = 24
GOAL_MS = 150.0
CHAT_DEADLINE_S = 60.0  # a chat that has not ended by then fails the benchmark


@dataclass
class GatewayRun:
    workflow_id: str
    prompt: str
    from_sent: float  # seconds, POST sent -> first delta arrived
    from_returned: float  # seconds, POST returned -> first delta arrived
    sent_wall: float  # time.time() when the POST was sent
    delta_wall: float  # time.time() when the first delta arrived


async def gateway_ttft(gateway: httpx.AsyncClient, prompt: str) -> GatewayRun:
    """Start a chat and time its first delta on the SSE stream; read on to the terminal
    event so the next repetition starts on a quiet stack."""
    sent_wall, sent = time.time(), time.perf_counter()
    workflow_id = await start_chat(gateway, prompt=prompt, max_tokens=MAX_TOKENS)
    returned = time.perf_counter()
    first: StreamEvent | None = None
    async with (
        asyncio.timeout(CHAT_DEADLINE_S),
        contextlib.aclosing(stream_events(gateway, workflow_id)) as events,
    ):
        async for event in events:
            # visible: a delta with text (resume mode first writes an empty one that
            # only records the provider's response id)
            if first is None and event.event == "delta" and (event.data or {}).get("text"):
                first = event
            if event.event in TERMINAL_EVENTS:
                break
    if first is None:
        raise RuntimeError(f"no delta with text on the stream of {workflow_id}")
    return GatewayRun(
        workflow_id, prompt, first.at - sent, first.at - returned, sent_wall, first.wall
    )


async def v1_ttft(client: openai.AsyncOpenAI, prompt: str) -> float:
    """Seconds from `responses.create(stream=True)` being called to the first text
    delta, through /v1 (read on to the end, as gateway_ttft does)."""
    sent = time.perf_counter()
    first: float | None = None
    async with asyncio.timeout(CHAT_DEADLINE_S):
        stream = await client.responses.create(
            model="simulator", input=prompt, max_output_tokens=MAX_TOKENS, stream=True
        )
        async for event in stream:
            if first is None and event.type == "response.output_text.delta" and event.delta:
                first = time.perf_counter()
    if first is None:
        raise RuntimeError(f"no text delta on the /v1 stream of {prompt!r}")
    return first - sent


async def measure(stack: LocalStack, size: str) -> Report:
    reps, warmup = SIZES[size]["reps"], SIZES[size]["warmup"]
    llm = provider_client(stack.simulator_url, timeout_s=30)
    api = worker_api()
    sim: list[float] = []
    runs: list[GatewayRun] = []
    v1: list[float] = []
    sdk = openai.AsyncOpenAI(
        base_url=f"{stack.gateway_url}/v1", api_key=TEST_API_KEYS["tester"], max_retries=0
    )
    async with gateway_client(stack) as gateway, sdk:
        for i in range(warmup + reps):
            # Interleaved, alternating which goes first, so drift hits both alike.
            # Distinct prompts: a request identical to one just made could be served by
            # the generation already running (the Responses API attaches to it).
            prompt = unique_prompt(f"Time to first token, repetition {i}")
            direct = unique_prompt(f"Time to first token, direct, repetition {i}")
            if i % 2 == 0:
                s = (await provider_stream(llm, direct, MAX_TOKENS, api)).first_s
                run = await gateway_ttft(gateway, prompt)
            else:
                run = await gateway_ttft(gateway, prompt)
                s = (await provider_stream(llm, direct, MAX_TOKENS, api)).first_s
            through_v1 = await v1_ttft(sdk, unique_prompt(f"Time to first token, /v1, {i}"))
            if i < warmup:
                continue
            sim.append(s)
            runs.append(run)
            v1.append(through_v1)
            log(
                f"  rep {i - warmup + 1}/{reps}: simulator {s * 1000:.0f} ms, "
                f"gateway {run.from_sent * 1000:.0f} ms, /v1 {through_v1 * 1000:.0f} ms"
            )
    await llm.close()
    from_sent = [r.from_sent for r in runs]
    from_returned = [r.from_returned for r in runs]

    overhead = [g - s for g, s in zip(from_sent, sim, strict=True)]
    overhead_returned = [g - s for g, s in zip(from_returned, sim, strict=True)]

    over_p50, over_p95 = percentile_ms(overhead, 50), percentile_ms(overhead, 95)
    figures = [
        Figure(
            "TTFT through the gateway, p50 (POST sent → first delta with text)",
            percentile_ms(from_sent, 50),
            percentile_ms(sim, 50),
            "ms",
            "≤ baseline + 150 ms",
            over_p50 <= GOAL_MS,
            "simulator's own TTFT, p50",
        ),
        Figure(
            "TTFT through the gateway, p95 (POST sent → first delta with text)",
            percentile_ms(from_sent, 95),
            percentile_ms(sim, 95),
            "ms",
            "≤ baseline + 150 ms",
            percentile_ms(from_sent, 95) - percentile_ms(sim, 95) <= GOAL_MS,
            "simulator's own TTFT, p95",
        ),
        Figure(
            "added by gateway + Temporal + worker, p50 of per-pair differences",
            over_p50,
            0.0,
            "ms",
            "≤ 150 ms",
            over_p50 <= GOAL_MS,
        ),
        Figure(
            "added, p95 of per-pair differences",
            over_p95,
            0.0,
            "ms",
            "≤ 150 ms",
            over_p95 <= GOAL_MS,
        ),
        Figure(
            "TTFT through /v1 (openai SDK, responses.create(stream=True)), p50",
            percentile_ms(v1, 50),
            percentile_ms(sim, 50),
            "ms",
            "≤ baseline + 150 ms",
            percentile_ms(v1, 50) - percentile_ms(sim, 50) <= GOAL_MS,
            "simulator's own TTFT, p50",
        ),
        Figure(
            "added, p50, counted from the POST's return",
            percentile_ms(overhead_returned, 50),
            0.0,
            "ms",
        ),
    ]
    details: dict[str, Any] = {
        "repetitions": reps,
        "warmup_repetitions": warmup,
        "max_tokens": MAX_TOKENS,
        "baseline_api": api,
        "simulator_ttft_ms": summary(sim, 1000),
        "gateway_ttft_from_post_sent_ms": summary(from_sent, 1000),
        "gateway_ttft_from_post_returned_ms": summary(from_returned, 1000),
        "overhead_ms": summary(overhead, 1000),
        "v1_ttft_ms": summary(v1, 1000),
        "overhead_from_post_returned_ms": summary(overhead_returned, 1000),
        "breakdown_ms": await first_token_breakdown(stack, runs),
        "raw_ms": {
            "simulator": [round(x * 1000, 1) for x in sim],
            "gateway_from_post_sent": [round(x * 1000, 1) for x in from_sent],
            "v1": [round(x * 1000, 1) for x in v1],
        },
    }
    return Report(
        "ttft",
        size,
        figures,
        "the simulator's own TTFT (openai client → simulator, same kind of request and API)",
        details,
    )


def main(argv: list[str] | None = None) -> int:
    return run_benchmark("ttft", __doc__, SIMULATOR_ENV, measure, argv)


if __name__ == "__main__":
    raise SystemExit(main())
