"""The provider alone: the simulator called straight with the openai client, through the
same API and with the same settings as the workers call it (activities/generation.py,
activities/resumable.py). The baseline that durable-chat's latencies are set beside."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import openai

from common.settings import Settings
from testing.oracle import GATEWAY_MODEL, GATEWAY_TEMPERATURE


@dataclass(frozen=True)
class StreamTimes:
    first_s: float
    """request sent -> first text token"""
    done_s: float
    """request sent -> the stream's end"""
    tokens: int
    """text deltas received"""


def worker_api() -> str:
    """The API the workers call the simulator with: the Responses API unless
    GENERATION_MODE=restart (in auto mode the workers' probe finds it can resume)."""
    return "chat.completions" if Settings().generation_mode == "restart" else "responses"


def provider_client(simulator_url: str, timeout_s: float = 300) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{simulator_url}/v1", api_key="bench", max_retries=0, timeout=timeout_s
    )


async def provider_stream(
    llm: openai.AsyncOpenAI, prompt: str, max_tokens: int, api: str
) -> StreamTimes:
    """Stream one answer from the provider; time its first text token and its end."""
    started = time.perf_counter()
    first: float | None = None
    tokens = 0
    if api == "responses":
        stream: Any = await llm.responses.create(
            model=GATEWAY_MODEL,
            input=[{"role": "user", "content": prompt}],
            max_output_tokens=max_tokens,
            temperature=GATEWAY_TEMPERATURE,
            background=True,
            stream=True,
        )
        async with stream:
            async for event in stream:
                if event.type == "response.output_text.delta":
                    tokens += 1
                    if first is None:
                        first = time.perf_counter()
    else:
        stream = await llm.chat.completions.create(
            model=GATEWAY_MODEL,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=max_tokens,
            temperature=GATEWAY_TEMPERATURE,
            stream=True,
            stream_options={"include_usage": True},
        )
        async with stream:
            async for event in stream:
                if any(c.delta.content for c in event.choices):
                    tokens += 1
                    if first is None:
                        first = time.perf_counter()
    done = time.perf_counter()
    if first is None:
        raise RuntimeError("the provider sent no token")
    return StreamTimes(first - started, done - started, tokens)
