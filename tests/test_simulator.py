"""End-to-end tests of the LLM simulator: a real server process, the real ``openai`` client."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from llm_simulator.stats import REQUEST_LOG_CAPACITY
from llm_simulator.text import (
    MARKER,
    NATURAL_MAX_TOKENS,
    NATURAL_MIN_TOKENS,
    simulated_reply,
    simulated_tokens,
)
from testing.oracle import prompt_with_natural_length
from testing.simulator import running_simulator

MODEL = "sim-test-model"


@pytest.fixture(scope="module")
def simulator_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One simulator process for the whole module (fast: TTFT 20 ms, 2000 tokens/s)."""
    log_path = tmp_path_factory.mktemp("simulator") / "simulator.log"
    with running_simulator(log_path) as simulator:
        yield simulator.url


@pytest.fixture(autouse=True)
def _disarm_faults(simulator_url: str) -> Iterator[None]:
    """No test leaves a fault armed for the next one."""
    yield
    httpx.delete(f"{simulator_url}/sim/faults", timeout=5).raise_for_status()


@pytest.fixture
async def client(simulator_url: str) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(
        base_url=f"{simulator_url}/v1", api_key="simulator", max_retries=0, timeout=30
    ) as openai_client:
        yield openai_client


@pytest.fixture
async def sim(simulator_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=simulator_url, timeout=30) as http:
        yield http


def _conversation(prompt: str) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": "You are a test."},
        {"role": "user", "content": prompt},
    ]


def _unique(label: str) -> str:
    return f"{label} {uuid.uuid4().hex}"


async def _prompt_stats(sim: httpx.AsyncClient, prompt: str) -> dict[str, int] | None:
    response = await sim.get("/sim/stats")
    response.raise_for_status()
    by_prompt: dict[str, dict[str, int]] = response.json()["by_prompt"]
    return by_prompt.get(prompt)


async def _complete(
    client: AsyncOpenAI,
    messages: list[dict[str, Any]],
    *,
    max_tokens: int = 40,
    temperature: float | None = None,
) -> str:
    kwargs: dict[str, Any] = {"max_tokens": max_tokens}
    if temperature is not None:
        kwargs["temperature"] = temperature
    completion = await client.chat.completions.create(
        model=MODEL,
        messages=messages,  # type: ignore[arg-type]
        **kwargs,
    )
    content = completion.choices[0].message.content
    assert content is not None
    return content


def test_natural_reply_is_cut_by_the_limit_only() -> None:
    """Pure: the reply depends on messages, model and temperature; the limit only cuts it."""
    lengths = []
    for index in range(300):
        messages = _conversation(f"natural {index}")
        natural = simulated_reply(messages, MODEL, 5000, 0.5)
        lengths.append(natural.natural_tokens)
        assert natural.finish_reason == "stop"
        assert len(natural.tokens) == natural.natural_tokens
        assert NATURAL_MIN_TOKENS <= natural.natural_tokens <= NATURAL_MAX_TOKENS
        assert "".join(natural.tokens).startswith(MARKER)
        assert natural.tokens[-1].endswith(".")  # a natural end is a sentence end
        for limit in (0, 3, 40, natural.natural_tokens - 1):
            cut = simulated_reply(messages, MODEL, limit, 0.5)
            assert cut.tokens == natural.tokens[:limit]
            assert cut.finish_reason == "length"
            assert cut.natural_tokens == natural.natural_tokens
            assert simulated_tokens(messages, MODEL, limit, 0.5) == list(cut.tokens)
        exact = simulated_reply(messages, MODEL, natural.natural_tokens, 0.5)
        assert exact == natural
    assert len(set(lengths)) > 100  # lengths vary with the request
    messages = _conversation("natural 0")
    assert simulated_reply(messages, MODEL, 5000, 0.9) != simulated_reply(
        messages, MODEL, 5000, 0.5
    )
    with pytest.raises(ValueError):
        simulated_reply(messages, MODEL, -1, 0.5)


def _prompt_ending(finish_reason: str, max_tokens: int) -> str:
    """A unique prompt whose reply with this limit ends with ``finish_reason``."""
    for _ in range(10_000):
        prompt = _unique(finish_reason)
        reply = simulated_reply(_conversation(prompt), MODEL, max_tokens, 1.0)
        if reply.finish_reason == finish_reason:
            return prompt
    raise AssertionError(f"no prompt ending with {finish_reason} at {max_tokens}")


async def test_health_and_models(sim: httpx.AsyncClient, client: AsyncOpenAI) -> None:
    health = await sim.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "simulator": True}
    models = [model.id async for model in client.models.list()]
    assert "simulator" in models


async def test_same_request_gives_same_text(client: AsyncOpenAI) -> None:
    messages = _conversation(_unique("determinism"))
    first = await _complete(client, messages, temperature=0.3)
    second = await _complete(client, messages, temperature=0.3)
    assert first == second
    # Tests elsewhere can compute the expected answer without asking the server.
    assert first == "".join(simulated_tokens(messages, MODEL, 40, 0.3))


async def test_other_temperature_or_messages_give_other_text(client: AsyncOpenAI) -> None:
    messages = _conversation(_unique("variation"))
    base = await _complete(client, messages, temperature=0.3)
    assert await _complete(client, messages, temperature=0.9) != base
    other_messages = [*messages[:-1], {"role": "user", "content": _unique("variation")}]
    assert await _complete(client, other_messages, temperature=0.3) != base


async def test_length_is_the_natural_one_cut_at_max_tokens(client: AsyncOpenAI) -> None:
    messages = _conversation(_unique("length"))
    reply = simulated_reply(messages, MODEL, 5000, 1.0)
    cut_at = reply.natural_tokens - 5
    completion = await client.chat.completions.create(
        model=MODEL,
        messages=messages,  # type: ignore[arg-type]
        max_tokens=cut_at,
    )
    assert completion.object == "chat.completion"
    assert completion.model == MODEL
    choice = completion.choices[0]
    assert choice.finish_reason == "length"
    assert choice.message.role == "assistant"
    assert choice.message.content == "".join(reply.tokens[:cut_at])
    assert choice.message.content.startswith(MARKER)
    assert completion.usage is not None
    assert completion.usage.completion_tokens == cut_at
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.total_tokens == cut_at + completion.usage.prompt_tokens

    natural = await client.chat.completions.create(
        model=MODEL,
        messages=messages,  # type: ignore[arg-type]
        max_tokens=reply.natural_tokens + 5,
    )
    assert natural.choices[0].finish_reason == "stop"
    assert natural.choices[0].message.content == "".join(reply.tokens)
    assert natural.usage is not None
    assert natural.usage.completion_tokens == reply.natural_tokens

    by_new_name = await client.chat.completions.create(
        model=MODEL,
        messages=messages,  # type: ignore[arg-type]
        max_completion_tokens=12,
    )
    assert by_new_name.usage is not None
    assert by_new_name.usage.completion_tokens == 12

    default = await client.chat.completions.create(
        model=MODEL,
        messages=messages,  # type: ignore[arg-type]
    )
    assert default.usage is not None
    # SIM_DEFAULT_MAX_TOKENS defaults to 300.
    assert default.usage.completion_tokens == min(300, reply.natural_tokens)
    assert (
        default.choices[0].finish_reason == simulated_reply(messages, MODEL, 300, 1.0).finish_reason
    )


@pytest.mark.parametrize("ending", ["stop", "length"])
async def test_streaming_with_usage_matches_non_streaming(client: AsyncOpenAI, ending: str) -> None:
    messages = _conversation(_prompt_ending(ending, 80))
    expected = await _complete(client, messages, max_tokens=80)
    tokens = simulated_tokens(messages, MODEL, 80, 1.0)

    stream = await client.chat.completions.create(
        model=MODEL,
        messages=messages,  # type: ignore[arg-type]
        max_tokens=80,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces: list[str] = []
    roles: list[str] = []
    finish_reasons: list[str] = []
    usages = []
    async for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            assert chunk.choices == []
            usages.append(chunk.usage)
        for choice in chunk.choices:
            if choice.delta.role:
                roles.append(choice.delta.role)
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish_reasons.append(choice.finish_reason)

    assert "".join(pieces) == expected == "".join(tokens)
    assert len(pieces) == len(tokens)  # one chunk per token
    # a natural end can fall exactly on the limit: still "stop" (it was not cut)
    assert len(tokens) <= 80 if ending == "stop" else len(tokens) == 80
    assert roles == ["assistant"]
    assert finish_reasons == [ending]
    assert len(usages) == 1
    assert usages[0].completion_tokens == len(tokens)


async def test_streaming_without_usage_has_no_usage_chunk(client: AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=_conversation(_unique("no usage")),  # type: ignore[arg-type]
        max_tokens=10,
        stream=True,
    )
    chunks = [chunk async for chunk in stream]
    assert all(chunk.usage is None for chunk in chunks)
    assert all(chunk.choices for chunk in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks).startswith("[Simulated")


async def test_invalid_requests_get_openai_errors(
    sim: httpx.AsyncClient, client: AsyncOpenAI
) -> None:
    missing = await sim.post("/v1/chat/completions", json={"model": MODEL})
    assert missing.status_code == 400
    error = missing.json()["error"]
    assert {"message", "type", "code"} <= error.keys()
    assert error["type"] == "invalid_request_error"
    assert "messages" in error["message"]

    bad_type = await sim.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": _conversation("x"), "max_tokens": "many"},
    )
    assert bad_type.status_code == 400
    assert bad_type.json()["error"]["param"] == "max_tokens"

    not_json = await sim.post(
        "/v1/chat/completions",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert not_json.status_code == 400

    with pytest.raises(openai.BadRequestError) as too_long:
        await client.chat.completions.create(
            model=MODEL,
            messages=_conversation("x"),  # type: ignore[arg-type]
            max_tokens=8193,  # SIM_MAX_TOKENS_LIMIT default is 8192
        )
    assert too_long.value.status_code == 400
    assert "too large" in too_long.value.message


async def test_http_429_fault(sim: httpx.AsyncClient, client: AsyncOpenAI) -> None:
    armed = await sim.post("/sim/faults", json={"fault": "http_429", "retry_after_s": 7})
    assert armed.json()["remaining"] == 1
    prompt = _unique("rate limited")
    with pytest.raises(openai.RateLimitError) as raised:
        await _complete(client, _conversation(prompt))
    assert raised.value.status_code == 429
    assert raised.value.response.headers["retry-after"] == "7"
    assert raised.value.code == "rate_limit_exceeded"
    assert await _prompt_stats(sim, prompt) is None  # no generation started

    # count defaults to 1: the next request goes through.
    assert (await sim.get("/sim/faults")).json()["fault"] == "none"
    assert (await _complete(client, _conversation(prompt))).startswith(MARKER)
    assert await _prompt_stats(sim, prompt) == {"started": 1, "completed": 1}


async def test_http_500_fault_hits_the_next_count_requests(
    sim: httpx.AsyncClient, client: AsyncOpenAI
) -> None:
    await sim.post("/sim/faults", json={"fault": "http_500", "count": 2})
    prompt = _unique("server error")
    for remaining in (1, 0):
        with pytest.raises(openai.InternalServerError) as raised:
            await _complete(client, _conversation(prompt))
        assert raised.value.status_code == 500
        assert (await sim.get("/sim/faults")).json()["remaining"] == remaining
    assert await _prompt_stats(sim, prompt) is None
    await _complete(client, _conversation(prompt))
    assert await _prompt_stats(sim, prompt) == {"started": 1, "completed": 1}


async def test_disconnect_fault_breaks_the_stream(
    sim: httpx.AsyncClient, client: AsyncOpenAI
) -> None:
    await sim.post("/sim/faults", json={"fault": "disconnect", "after_tokens": 5})
    prompt = _unique("disconnect")
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=_conversation(prompt),  # type: ignore[arg-type]
        max_tokens=50,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces: list[str] = []
    finish_reasons: list[str | None] = []
    with pytest.raises(openai.APIConnectionError):
        async for chunk in stream:
            for choice in chunk.choices:
                if choice.delta.content:
                    pieces.append(choice.delta.content)
                finish_reasons.append(choice.finish_reason)
    assert len(pieces) == 5
    assert "".join(pieces) == " ".join(MARKER.split()[:5])
    assert not any(finish_reasons)
    assert await _prompt_stats(sim, prompt) == {"started": 1, "completed": 0}


async def test_disconnect_fault_without_streaming(
    sim: httpx.AsyncClient, client: AsyncOpenAI
) -> None:
    await sim.post("/sim/faults", json={"fault": "disconnect", "after_tokens": 3})
    prompt = _unique("disconnect non-stream")
    with pytest.raises(openai.APIConnectionError):
        await _complete(client, _conversation(prompt))
    assert await _prompt_stats(sim, prompt) == {"started": 1, "completed": 0}


async def test_stats_count_started_and_completed_per_prompt(
    sim: httpx.AsyncClient, client: AsyncOpenAI
) -> None:
    before = (await sim.get("/sim/stats")).json()
    prompt = _unique("stats")
    other = _unique("stats other")
    await _complete(client, _conversation(prompt))
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=_conversation(prompt),  # type: ignore[arg-type]
        max_tokens=20,
        stream=True,
    )
    async for _ in stream:
        pass
    await _complete(client, _conversation(other))

    after = (await sim.get("/sim/stats")).json()
    assert after["generations_started"] - before["generations_started"] == 3
    assert after["generations_completed"] - before["generations_completed"] == 3
    assert after["by_prompt"][prompt] == {"started": 2, "completed": 2}
    assert after["by_prompt"][other] == {"started": 1, "completed": 1}


async def test_abandoned_stream_is_started_but_never_completed(
    sim: httpx.AsyncClient, client: AsyncOpenAI
) -> None:
    # _conversation's system message is the instructions: at least 0.4 s at 2000 tokens/s.
    prompt, _ = prompt_with_natural_length(
        "abandoned", MODEL, at_least=800, instructions="You are a test."
    )
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=_conversation(prompt),  # type: ignore[arg-type]
        max_tokens=2000,  # at most 1024 tokens: half a second at 2000 tokens/s
        stream=True,
    )
    received = 0
    async for _ in stream:
        received += 1
        if received == 3:
            break
    await stream.close()
    # Well past the time the whole generation would have taken: it was cancelled.
    await asyncio.sleep(0.8)
    assert await _prompt_stats(sim, prompt) == {"started": 1, "completed": 0}


async def test_requests_log_records_the_conversation(
    sim: httpx.AsyncClient, client: AsyncOpenAI
) -> None:
    first_prompt = _unique("turn one")
    first_answer = await _complete(client, _conversation(first_prompt), temperature=0.2)
    follow_up = [
        *_conversation(first_prompt),
        {"role": "assistant", "content": first_answer},
        {"role": "user", "content": _unique("turn two")},
    ]
    await _complete(client, follow_up, max_tokens=15, temperature=0.2)

    recent = (await sim.get("/sim/requests", params={"limit": 2})).json()
    assert len(recent) == 2
    earlier, latest = recent
    assert earlier["messages"] == _conversation(first_prompt)
    assert latest["messages"] == follow_up  # earlier turns were sent as context
    assert latest["model"] == MODEL
    assert latest["max_tokens"] == 15
    assert latest["temperature"] == 0.2
    assert latest["stream"] is False
    assert earlier["received_at"] <= latest["received_at"]

    assert len((await sim.get("/sim/requests")).json()) <= 50
    assert (
        await sim.get("/sim/requests", params={"limit": REQUEST_LOG_CAPACITY + 1})
    ).status_code == 400


async def test_fault_armed_from_settings_and_sigterm(tmp_path: Path) -> None:
    with running_simulator(
        tmp_path / "simulator.log",
        SIM_FAULT="http_429",
        SIM_FAULT_COUNT="1",
        SIM_RETRY_AFTER_S="3",
    ) as simulator:
        async with AsyncOpenAI(
            base_url=f"{simulator.url}/v1", api_key="simulator", max_retries=0
        ) as client:
            with pytest.raises(openai.RateLimitError) as raised:
                await _complete(client, _conversation("from settings"))
            assert raised.value.response.headers["retry-after"] == "3"
            assert (await _complete(client, _conversation("from settings"))).startswith(MARKER)
        # SIGTERM: graceful shutdown within 5 s; uvicorn then re-raises the signal (exit -15).
        simulator.process.terminate()
        assert await asyncio.to_thread(simulator.process.wait, 5) in (0, -signal.SIGTERM)
