"""Contract tests: the simulator is a twin of OpenAI's Chat Completions and Responses APIs.

Every object and event the simulator sends is validated against the installed ``openai``
SDK's own pydantic types, with no field the SDK does not know (recursively), and the events of
each way a generation can end come in the documented order. Each case is checked on the raw
wire (httpx + httpx-sse) and once more through the real ``openai.AsyncOpenAI`` client, used the
way the workers use it. A real simulator process serves them all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseErrorEvent,
    ResponseFailedEvent,
    ResponseIncompleteEvent,
    ResponseQueuedEvent,
)
from openai.types.shared import ErrorObject

from llm_simulator.settings import SimulatorSettings
from llm_simulator.text import NATURAL_MAX_TOKENS, NATURAL_MIN_TOKENS
from testing.oracle import chat_messages, expected_reply, prompt_with_natural_length, unique_prompt
from testing.simulator import running_simulator
from tests.simulator_support import (
    BACKGROUND_PREAMBLE,
    FOREGROUND_PREAMBLE,
    assert_no_extra_fields,
    prompt_stats,
    read_sse,
    responses_event_types,
    sse_json,
    stats,
    strict,
    strict_event,
)

MODEL = "sim-contract-model"
TOKENS_PER_SECOND = 1000
CONTEXT_WINDOW = 20_000
#: Below the shortest natural reply: every reply is cut at this limit.
CUT = NATURAL_MIN_TOKENS - 8
#: Above the longest natural reply: every reply ends naturally.
UNCUT = NATURAL_MAX_TOKENS + 100


@pytest.fixture(scope="module")
def simulator_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """TTFT 20 ms, 1000 tokens/s (a 1000-token reply takes a second), a 20k context window."""
    log_path = tmp_path_factory.mktemp("simulator-contract") / "simulator.log"
    with running_simulator(
        log_path,
        SIM_TOKENS_PER_SECOND=str(TOKENS_PER_SECOND),
        SIM_CONTEXT_WINDOW=str(CONTEXT_WINDOW),
    ) as simulator:
        yield simulator.url


@pytest.fixture(autouse=True)
def _disarm_faults(simulator_url: str) -> Iterator[None]:
    yield
    httpx.delete(f"{simulator_url}/sim/faults", timeout=5).raise_for_status()


@pytest.fixture
async def sim(simulator_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=simulator_url, timeout=30) as http:
        yield http


@pytest.fixture
async def client(simulator_url: str) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(
        base_url=f"{simulator_url}/v1", api_key="simulator", max_retries=0, timeout=30
    ) as openai_client:
        yield openai_client


async def _arm(sim: httpx.AsyncClient, **fault: Any) -> None:
    armed = await sim.post("/sim/faults", json=fault)
    assert armed.status_code == 200, armed.text
    assert armed.json()["fault"] == fault["fault"]


def _create_body(prompt: str, max_output_tokens: int, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "input": prompt, "max_output_tokens": max_output_tokens, **extra}


async def _stream_response(
    sim: httpx.AsyncClient, body: dict[str, Any], *, idle_timeout: float | None = 10
) -> tuple[list[dict[str, Any]], bool]:
    """POST a streamed create; return the events (each strictly validated) and whether the
    stream ended cleanly."""
    response, events, clean = await read_sse(
        sim, "POST", "/v1/responses", json={**body, "stream": True}, idle_timeout=idle_timeout
    )
    assert response.status_code == 200
    payloads = sse_json(events)
    for payload in payloads:
        strict_event(payload)
    return payloads, clean


async def _resume(
    sim: httpx.AsyncClient, response_id: str, starting_after: int | None = None
) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"stream": "true"}
    if starting_after is not None:
        params["starting_after"] = starting_after
    response, events, clean = await read_sse(
        sim, "GET", f"/v1/responses/{response_id}", params=params, idle_timeout=10
    )
    assert response.status_code == 200 and clean
    payloads = sse_json(events)
    for payload in payloads:
        strict_event(payload)
    return payloads


def _types(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


def _deltas(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")


def _assert_contiguous(events: list[dict[str, Any]], first: int = 0) -> None:
    assert [e["sequence_number"] for e in events] == list(range(first, first + len(events)))


async def _retrieve(sim: httpx.AsyncClient, response_id: str) -> Response:
    raw = await sim.get(f"/v1/responses/{response_id}")
    assert raw.status_code == 200, raw.text
    return strict(Response, raw.json())


async def _eventually_status(
    sim: httpx.AsyncClient, response_id: str, status: str, within_s: float = 10
) -> Response:
    deadline = time.monotonic() + within_s
    while (current := await _retrieve(sim, response_id)).status != status:
        assert time.monotonic() < deadline, f"still {current.status}, never {status}"
        await asyncio.sleep(0.02)
    return current


def _assert_error(body: Any, code: str, param: str | None = None) -> ErrorObject:
    error = strict(ErrorObject, body["error"])
    assert error.code == code
    if param is not None:
        assert error.param == param
    return error


# ---------------------------------------------------------------- Responses API, raw wire ---


async def test_responses_completed_in_background(sim: httpx.AsyncClient) -> None:
    prompt, reply = prompt_with_natural_length("completed", MODEL, at_most=120)
    events, clean = await _stream_response(sim, _create_body(prompt, UNCUT, background=True))
    assert clean
    n = reply.natural_tokens
    assert _types(events) == responses_event_types(background=True, deltas=n, end="completed")
    _assert_contiguous(events)
    created, queued, in_progress = (strict_event(e).response for e in events[:3])
    assert (created.status, queued.status, in_progress.status) == ("queued",) * 2 + ("in_progress",)
    assert created.output == [] and created.background is True
    assert events[-4]["text"] == _deltas(events) == "".join(reply.tokens)
    assert events[-2]["item"]["status"] == "completed"
    final = strict_event(events[-1]).response
    assert final.status == "completed" and final.incomplete_details is None
    assert final.completed_at is not None and final.error is None
    assert final.output_text == "".join(reply.tokens)
    assert final.usage is not None and final.usage.output_tokens == n
    assert final.usage.total_tokens == final.usage.input_tokens + n
    retrieved = await _retrieve(sim, final.id)
    assert retrieved.model_dump() == final.model_dump()


async def test_responses_incomplete_at_max_output_tokens(sim: httpx.AsyncClient) -> None:
    prompt = unique_prompt("cut")
    for background in (True, False):
        events, clean = await _stream_response(
            sim, _create_body(prompt, CUT, background=background)
        )
        assert clean
        assert _types(events) == responses_event_types(
            background=background, deltas=CUT, end="incomplete"
        )
        _assert_contiguous(events)
        assert strict_event(events[0]).response.status == (
            "queued" if background else "in_progress"
        )
        assert _deltas(events) == "".join(expected_reply(prompt, CUT, 1.0, MODEL).tokens)
        assert events[-2]["item"]["status"] == "incomplete"
        final = strict_event(events[-1]).response
        assert final.status == "incomplete" and final.completed_at is None
        assert final.incomplete_details is not None
        assert final.incomplete_details.reason == "max_output_tokens"
        assert final.usage is not None and final.usage.output_tokens == CUT
        assert (await _retrieve(sim, final.id)).model_dump() == final.model_dump()
    # Non-streaming, foreground: the same final object.
    raw = await sim.post("/v1/responses", json=_create_body(prompt, CUT))
    response = strict(Response, raw.json())
    assert response.status == "incomplete" and response.output[0].status == "incomplete"  # type: ignore[union-attr]


async def test_responses_content_filter(sim: httpx.AsyncClient) -> None:
    await _arm(sim, fault="content_filter", after_tokens=5)
    prompt = unique_prompt("filtered")
    events, clean = await _stream_response(sim, _create_body(prompt, UNCUT, background=True))
    assert clean
    assert _types(events) == responses_event_types(background=True, deltas=5, end="incomplete")
    final = strict_event(events[-1]).response
    assert final.status == "incomplete"
    assert final.incomplete_details is not None
    assert final.incomplete_details.reason == "content_filter"
    assert final.output_text == "".join(expected_reply(prompt, 5, 1.0, MODEL).tokens)
    assert (await _retrieve(sim, final.id)).status == "incomplete"
    assert await prompt_stats(sim, prompt) == {"started": 1, "completed": 0}


async def test_responses_failed_stays_failed(sim: httpx.AsyncClient) -> None:
    await _arm(sim, fault="response_failed", after_tokens=4, code="invalid_prompt")
    events, clean = await _stream_response(
        sim, _create_body(unique_prompt("failed"), UNCUT, background=True)
    )
    assert clean
    assert _types(events) == responses_event_types(background=True, deltas=4, end="failed")
    final = strict_event(events[-1]).response
    assert final.status == "failed" and final.error is not None
    assert final.error.code == "invalid_prompt" and final.error.message
    assert final.usage is not None and final.usage.output_tokens == 4
    await asyncio.sleep(0.1)
    again = await _retrieve(sim, final.id)
    assert again.status == "failed" and again.error is not None
    assert again.error.code == "invalid_prompt"
    assert _types(await _resume(sim, final.id, starting_after=len(events) - 2)) == [
        "response.failed"
    ]
    # The default code is the transient one.
    await _arm(sim, fault="response_failed", after_tokens=0)
    events, _ = await _stream_response(
        sim, _create_body(unique_prompt("failed"), UNCUT, background=True)
    )
    assert _types(events) == responses_event_types(background=True, deltas=0, end="failed")
    error = strict_event(events[-1]).response.error
    assert error is not None and error.code == "server_error"


async def test_responses_cancelled_mid_stream(sim: httpx.AsyncClient) -> None:
    prompt, reply = prompt_with_natural_length("cancel", MODEL, at_least=700)
    created = strict(
        Response,
        (await sim.post("/v1/responses", json=_create_body(prompt, UNCUT, background=True))).json(),
    )
    assert created.status == "queued"

    async def cancel_soon() -> Response:
        await _eventually_status(sim, created.id, "in_progress")
        await asyncio.sleep(0.1)
        raw = await sim.post(f"/v1/responses/{created.id}/cancel")
        assert raw.status_code == 200, raw.text
        return strict(Response, raw.json())

    canceller = asyncio.create_task(cancel_soon())
    events = await _resume(sim, created.id)
    cancelled = await canceller
    assert cancelled.status == "cancelled"
    deltas = sum(e["type"] == "response.output_text.delta" for e in events)
    assert 0 < deltas < reply.natural_tokens
    assert _types(events) == responses_event_types(background=True, deltas=deltas, end="cancelled")
    _assert_contiguous(events)
    final = strict_event(events[-1]).response
    assert final.status == "cancelled" and final.error is None
    assert final.usage is not None and final.usage.output_tokens == deltas
    assert final.output_text == _deltas(events)
    # Idempotent; every later view is the same.
    again = await sim.post(f"/v1/responses/{created.id}/cancel")
    assert strict(Response, again.json()).model_dump() == final.model_dump()
    assert (await _retrieve(sim, created.id)).model_dump() == final.model_dump()
    assert await prompt_stats(sim, prompt) == {"started": 1, "completed": 0}


async def test_cancel_refuses_what_cannot_be_cancelled(sim: httpx.AsyncClient) -> None:
    done = (
        await sim.post(
            "/v1/responses", json=_create_body(unique_prompt("done"), UNCUT, background=True)
        )
    ).json()
    await _eventually_status(sim, done["id"], "completed")
    refused = await sim.post(f"/v1/responses/{done['id']}/cancel")
    assert refused.status_code == 400
    assert (
        strict(ErrorObject, refused.json()["error"]).message
        == "Cannot cancel a completed response."
    )

    cut = (
        await sim.post(
            "/v1/responses", json=_create_body(unique_prompt("cut"), CUT, background=True)
        )
    ).json()
    await _eventually_status(sim, cut["id"], "incomplete")
    assert (await sim.post(f"/v1/responses/{cut['id']}/cancel")).status_code == 400

    foreground = (
        await sim.post("/v1/responses", json=_create_body(unique_prompt("sync"), 5))
    ).json()
    refused = await sim.post(f"/v1/responses/{foreground['id']}/cancel")
    assert refused.status_code == 400
    assert "synchronous" in strict(ErrorObject, refused.json()["error"]).message


async def test_responses_error_event_then_reattach(sim: httpx.AsyncClient) -> None:
    await _arm(sim, fault="error_event", after_tokens=6)
    prompt, reply = prompt_with_natural_length("error event", MODEL, at_most=200)
    first, clean = await _stream_response(sim, _create_body(prompt, UNCUT, background=True))
    assert clean  # the stream ends after the error event, without a terminal event
    assert _types(first) == [*BACKGROUND_PREAMBLE, *["response.output_text.delta"] * 6, "error"]
    error = strict_event(first[-1])
    assert isinstance(error, ResponseErrorEvent)
    assert error.code == "server_error" and error.message and error.param is None
    _assert_contiguous(first)
    # The generation ran on at the provider: re-attach after the last event seen.
    response_id = first[0]["response"]["id"]
    rest = await _resume(sim, response_id, starting_after=first[-1]["sequence_number"])
    _assert_contiguous(first + rest)
    assert _deltas(first) + _deltas(rest) == "".join(reply.tokens)
    assert rest[-1]["type"] == "response.completed"
    # The error event is part of the response's history.
    replay = await _resume(sim, response_id)
    assert _types(replay) == responses_event_types(
        background=True, deltas=reply.natural_tokens, end="completed", error_after=6
    )


async def test_stuck_queued_until_cancelled(sim: httpx.AsyncClient) -> None:
    await _arm(sim, fault="stuck_queued")
    prompt = unique_prompt("stuck")
    raw = await sim.post("/v1/responses", json=_create_body(prompt, UNCUT, background=True))
    created = strict(Response, raw.json())
    assert created.status == "queued" and created.output == []
    await asyncio.sleep(0.3)
    assert (await _retrieve(sim, created.id)).status == "queued"
    _, events, clean = await read_sse(
        sim, "GET", f"/v1/responses/{created.id}", params={"stream": "true"}, idle_timeout=0.3
    )
    assert not clean  # nothing after response.queued
    assert _types(sse_json(events)) == ["response.created", "response.queued"]
    assert isinstance(strict_event(sse_json(events)[1]), ResponseQueuedEvent)

    async def cancel_later() -> None:
        await asyncio.sleep(0.2)
        assert (await sim.post(f"/v1/responses/{created.id}/cancel")).status_code == 200

    canceller = asyncio.create_task(cancel_later())
    attached = await _resume(sim, created.id)  # ends with the cancellation
    await canceller
    assert _types(attached) == ["response.created", "response.queued", "response.failed"]
    final = strict_event(attached[-1]).response
    assert final.status == "cancelled" and final.output == []
    assert final.usage is not None and final.usage.output_tokens == 0
    assert await prompt_stats(sim, prompt) == {"started": 1, "completed": 0}


async def test_queued_then_in_progress_then_completed_by_polling(sim: httpx.AsyncClient) -> None:
    prompt, _ = prompt_with_natural_length("polled", MODEL, at_least=400)
    raw = await sim.post("/v1/responses", json=_create_body(prompt, UNCUT, background=True))
    seen = [strict(Response, raw.json()).status]
    response_id = raw.json()["id"]
    deadline = time.monotonic() + 10
    while seen[-1] != "completed":
        assert time.monotonic() < deadline
        current = await _retrieve(sim, response_id)
        if current.status != seen[-1]:
            seen.append(current.status or "")
        if current.status == "in_progress":
            assert current.usage is None and current.completed_at is None
        await asyncio.sleep(0.02)
    assert seen == ["queued", "in_progress", "completed"]


async def test_stall_hangs_only_the_connection_of_a_background_response(
    sim: httpx.AsyncClient,
) -> None:
    await _arm(sim, fault="stall", after_tokens=3, stall_s=1.5)
    prompt, reply = prompt_with_natural_length("stall", MODEL, at_most=150)
    started = time.monotonic()
    stalled = asyncio.create_task(
        _stream_response(sim, _create_body(prompt, UNCUT, background=True))
    )
    await asyncio.sleep(0.5)  # the generation (<= 170 ms) is over; the stream is silent
    assert not stalled.done()
    response_id = (await sim.get("/sim/requests", params={"limit": 1})).json()[-1]["response_id"]
    resumed = await _resume(sim, response_id, starting_after=len(BACKGROUND_PREAMBLE) + 2)
    assert time.monotonic() - started < 1.4  # the rest came at once
    assert resumed[-1]["type"] == "response.completed"
    events, clean = await stalled
    assert clean and time.monotonic() - started >= 1.5
    assert _types(events) == responses_event_types(
        background=True, deltas=reply.natural_tokens, end="completed"
    )
    assert events[len(BACKGROUND_PREAMBLE) + 3 :] == resumed


async def test_context_window(sim: httpx.AsyncClient) -> None:
    long_input = "word " * (CONTEXT_WINDOW - 100)
    raw = await sim.post("/v1/responses", json=_create_body(long_input, 200))
    assert raw.status_code == 400
    _assert_error(raw.json(), "context_length_exceeded", "input")
    fits = await sim.post("/v1/responses", json=_create_body(long_input, 50))
    assert fits.status_code == 200
    raw = await sim.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": chat_messages(long_input), "max_tokens": 200},
    )
    assert raw.status_code == 400
    error = _assert_error(raw.json(), "context_length_exceeded", "messages")
    assert error.type == "invalid_request_error" and str(CONTEXT_WINDOW) in error.message
    assert SimulatorSettings().context_window == 128_000  # the default


# ---------------------------------------------------------------- chat completions, raw ------


async def _chat_stream(
    sim: httpx.AsyncClient, prompt: str, max_tokens: int, *, include_usage: bool = True
) -> tuple[list[dict[str, Any]], list[str], bool]:
    """Stream a chat completion; return its JSON payloads, the raw data lines and whether the
    stream ended cleanly."""
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": chat_messages(prompt),
        "max_tokens": max_tokens,
        "stream": True,
    }
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    response, events, clean = await read_sse(
        sim, "POST", "/v1/chat/completions", json=body, idle_timeout=10
    )
    assert response.status_code == 200
    return sse_json(events), [event.data for event in events], clean


def _content(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


@pytest.mark.parametrize("ending", ["stop", "length"])
async def test_chat_stream_ends_with_stop_or_length(sim: httpx.AsyncClient, ending: str) -> None:
    prompt, reply = prompt_with_natural_length(ending, MODEL, at_most=150)
    max_tokens = UNCUT if ending == "stop" else reply.natural_tokens - 1
    payloads, data, clean = await _chat_stream(sim, prompt, max_tokens)
    assert clean and data[-1] == "[DONE]"
    chunks = [strict(ChatCompletionChunk, payload) for payload in payloads]
    tokens = expected_reply(prompt, max_tokens, 1.0, MODEL).tokens
    assert _content(chunks) == "".join(tokens)
    assert chunks[0].choices[0].delta.role == "assistant"
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish == [ending]
    assert chunks[-2].choices[0].finish_reason == ending
    # Usage: one last chunk with no choices; every other chunk says "usage": null.
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens == len(tokens)
    assert all("usage" in p and p["usage"] is None for p in payloads[:-1])


async def test_chat_stream_usage_only_when_asked(sim: httpx.AsyncClient) -> None:
    payloads, data, clean = await _chat_stream(
        sim, unique_prompt("no usage"), 10, include_usage=False
    )
    assert clean and data[-1] == "[DONE]"
    chunks = [strict(ChatCompletionChunk, payload) for payload in payloads]
    assert all(chunk.choices for chunk in chunks)
    assert all(chunk.usage is None for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"


async def test_chat_content_filter_and_error_chunk(sim: httpx.AsyncClient) -> None:
    await _arm(sim, fault="content_filter", after_tokens=5)
    prompt = unique_prompt("chat filter")
    payloads, data, clean = await _chat_stream(sim, prompt, UNCUT)
    chunks = [strict(ChatCompletionChunk, payload) for payload in payloads]
    assert clean and data[-1] == "[DONE]"
    assert _content(chunks) == "".join(expected_reply(prompt, 5, 1.0, MODEL).tokens)
    assert chunks[-2].choices[0].finish_reason == "content_filter"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5

    await _arm(sim, fault="response_failed", after_tokens=5)
    prompt = unique_prompt("chat error")
    payloads, data, clean = await _chat_stream(sim, prompt, UNCUT)
    assert clean and data[-1] != "[DONE]"
    chunks = [strict(ChatCompletionChunk, payload) for payload in payloads[:-1]]
    assert len(chunks) == 1 + 5  # the role chunk, then one per token
    assert not any(c.choices[0].finish_reason for c in chunks)
    error = _assert_error(payloads[-1], "server_error")
    assert error.type == "server_error" and error.message
    assert await prompt_stats(sim, prompt) == {"started": 1, "completed": 0}


async def test_chat_non_streaming_endings(sim: httpx.AsyncClient) -> None:
    async def complete(prompt: str, max_tokens: int) -> httpx.Response:
        return await sim.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": chat_messages(prompt), "max_tokens": max_tokens},
        )

    prompt, reply = prompt_with_natural_length("chat json", MODEL, at_most=150)
    for max_tokens, ending in ((UNCUT, "stop"), (reply.natural_tokens - 1, "length")):
        completion = strict(ChatCompletion, (await complete(prompt, max_tokens)).json())
        assert completion.choices[0].finish_reason == ending
        assert completion.usage is not None
        assert completion.usage.completion_tokens == min(max_tokens, reply.natural_tokens)
    await _arm(sim, fault="content_filter", after_tokens=3)
    filtered = strict(ChatCompletion, (await complete(prompt, UNCUT)).json())
    assert filtered.choices[0].finish_reason == "content_filter"
    assert filtered.usage is not None and filtered.usage.completion_tokens == 3
    await _arm(sim, fault="response_failed", after_tokens=3)
    failed = await complete(prompt, UNCUT)
    assert failed.status_code == 500
    _assert_error(failed.json(), "server_error")
    await _arm(sim, fault="response_failed", after_tokens=3, code="invalid_prompt")
    failed = await complete(prompt, UNCUT)
    assert failed.status_code == 400
    _assert_error(failed.json(), "invalid_prompt")


async def test_chat_stall_pauses_the_generation(sim: httpx.AsyncClient) -> None:
    await _arm(sim, fault="stall", after_tokens=3, stall_s=0.8)
    prompt = unique_prompt("chat stall")
    task = asyncio.create_task(_chat_stream(sim, prompt, 30))
    await asyncio.sleep(0.3)  # 3 tokens after 23 ms, then the pause until 0.82 s
    paused_at = (await stats(sim))["output_tokens"]
    await asyncio.sleep(0.3)
    assert (await stats(sim))["output_tokens"] == paused_at  # nothing generated meanwhile
    assert not task.done()
    payloads, _, clean = await task
    assert clean
    chunks = [strict(ChatCompletionChunk, payload) for payload in payloads]
    assert _content(chunks) == "".join(expected_reply(prompt, 30, 1.0, MODEL).tokens)
    assert await prompt_stats(sim, prompt) == {"started": 1, "completed": 1}


async def test_stats_bill_every_produced_token(sim: httpx.AsyncClient) -> None:
    before = await stats(sim)
    prompt = unique_prompt("billing")
    await sim.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": chat_messages(prompt), "max_tokens": 7},
    )
    await _arm(sim, fault="disconnect", after_tokens=4)
    await _chat_stream(sim, prompt, UNCUT)  # cut after 4 tokens, then cancelled
    await _arm(sim, fault="response_failed", after_tokens=2)
    await sim.post("/v1/responses", json=_create_body(prompt, UNCUT))
    after = await stats(sim)
    input_tokens = len(prompt.split()) + 3
    assert after["input_tokens"] - before["input_tokens"] == 3 * input_tokens
    # 7 + 2 exactly; the cut generation made at least 4 before it was cancelled.
    assert 7 + 4 + 2 <= after["output_tokens"] - before["output_tokens"] <= 7 + 12 + 2
    assert {"generations_started", "generations_completed", "by_prompt"} <= after.keys()


# ---------------------------------------------------------------- through the openai client --


async def _collect(stream: Any) -> list[Any]:
    events = []
    async for event in stream:
        assert_no_extra_fields(event)
        events.append(event)
    return events


async def test_client_sees_each_responses_ending(
    client: AsyncOpenAI, sim: httpx.AsyncClient
) -> None:
    """``responses.create(background=True, stream=True)``, as the workers call it."""

    async def run(prompt: str, limit: int) -> list[Any]:
        stream = await client.responses.create(
            model=MODEL, input=prompt, max_output_tokens=limit, background=True, stream=True
        )
        return await _collect(stream)

    prompt, reply = prompt_with_natural_length("client", MODEL, at_most=120)
    events = await run(prompt, UNCUT)
    assert [e.type for e in events] == responses_event_types(
        background=True, deltas=reply.natural_tokens, end="completed"
    )
    assert isinstance(events[-1], ResponseCompletedEvent)
    assert events[-1].response.output_text == "".join(reply.tokens)

    events = await run(unique_prompt("client cut"), CUT)
    assert isinstance(events[-1], ResponseIncompleteEvent)
    details = events[-1].response.incomplete_details
    assert details is not None and details.reason == "max_output_tokens"

    await _arm(sim, fault="content_filter", after_tokens=2)
    events = await run(unique_prompt("client filter"), UNCUT)
    assert isinstance(events[-1], ResponseIncompleteEvent)
    details = events[-1].response.incomplete_details
    assert details is not None and details.reason == "content_filter"

    await _arm(sim, fault="response_failed", after_tokens=2, code="invalid_prompt")
    events = await run(unique_prompt("client failed"), UNCUT)
    assert isinstance(events[-1], ResponseFailedEvent)
    assert events[-1].response.status == "failed"
    assert events[-1].response.error is not None
    assert events[-1].response.error.code == "invalid_prompt"
    failed = await client.responses.retrieve(events[-1].response.id)
    assert failed.status == "failed"


async def test_client_error_event_cancel_and_queue(
    client: AsyncOpenAI, sim: httpx.AsyncClient
) -> None:
    await _arm(sim, fault="error_event", after_tokens=3, code="server_error")
    prompt, reply = prompt_with_natural_length("client error event", MODEL, at_most=150)
    stream = await client.responses.create(
        model=MODEL, input=prompt, max_output_tokens=UNCUT, background=True, stream=True
    )
    first = await _collect(stream)  # the SDK yields the error event; the stream then ends
    assert isinstance(first[-1], ResponseErrorEvent) and first[-1].code == "server_error"
    response_id = first[0].response.id
    resumed = await client.responses.retrieve(
        response_id, stream=True, starting_after=first[-1].sequence_number
    )
    rest = await _collect(resumed)
    assert isinstance(rest[-1], ResponseCompletedEvent)
    assert rest[-1].response.output_text == "".join(reply.tokens)

    await _arm(sim, fault="stuck_queued")
    queued = await client.responses.create(
        model=MODEL, input=unique_prompt("client queued"), max_output_tokens=UNCUT, background=True
    )
    assert queued.status == "queued"
    assert (await client.responses.retrieve(queued.id)).status == "queued"
    cancelled = await client.responses.cancel(queued.id)
    assert cancelled.status == "cancelled"
    replay = await _collect(await client.responses.retrieve(queued.id, stream=True))
    assert isinstance(replay[-1], ResponseFailedEvent)
    assert replay[-1].response.status == "cancelled"

    done = await client.responses.create(
        model=MODEL, input=unique_prompt("client done"), max_output_tokens=5
    )
    with pytest.raises(openai.BadRequestError):  # not a background response
        await client.responses.cancel(done.id)


async def test_client_stall_times_out_and_reattaches(
    simulator_url: str, sim: httpx.AsyncClient
) -> None:
    await _arm(sim, fault="stall", after_tokens=2, stall_s=5)
    prompt, reply = prompt_with_natural_length("client stall", MODEL, at_most=150)
    async with AsyncOpenAI(
        base_url=f"{simulator_url}/v1",
        api_key="simulator",
        max_retries=0,
        timeout=openai.Timeout(10, read=0.5),
    ) as impatient:
        stream = await impatient.responses.create(
            model=MODEL, input=prompt, max_output_tokens=UNCUT, background=True, stream=True
        )
        seen: list[Any] = []
        with pytest.raises(openai.APITimeoutError):
            async for event in stream:
                seen.append(event)
        assert sum(e.type == "response.output_text.delta" for e in seen) == 2
        resumed = await impatient.responses.retrieve(
            seen[0].response.id, stream=True, starting_after=seen[-1].sequence_number
        )
        rest = await _collect(resumed)
    assert isinstance(rest[-1], ResponseCompletedEvent)
    assert "".join(e.delta for e in seen + rest if e.type == "response.output_text.delta") == (
        "".join(reply.tokens)
    )


async def test_client_chat_stream(client: AsyncOpenAI, sim: httpx.AsyncClient) -> None:
    """``chat.completions.create(stream=True, stream_options={"include_usage": True})``."""

    async def run(prompt: str, max_tokens: int) -> list[ChatCompletionChunk]:
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=chat_messages(prompt),  # type: ignore[arg-type]
            max_tokens=max_tokens,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = []
        async for chunk in stream:
            assert_no_extra_fields(chunk)
            chunks.append(chunk)
        return chunks

    prompt, reply = prompt_with_natural_length("client chat", MODEL, at_most=150)
    for max_tokens, ending in ((UNCUT, "stop"), (reply.natural_tokens - 2, "length")):
        chunks = await run(prompt, max_tokens)
        assert chunks[-2].choices[0].finish_reason == ending
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == min(max_tokens, reply.natural_tokens)

    await _arm(sim, fault="content_filter", after_tokens=4)
    chunks = await run(unique_prompt("client chat filter"), UNCUT)
    assert chunks[-2].choices[0].finish_reason == "content_filter"

    await _arm(sim, fault="response_failed", after_tokens=4, code="invalid_prompt")
    with pytest.raises(openai.APIError) as raised:
        await run(unique_prompt("client chat error"), UNCUT)
    assert not isinstance(raised.value, openai.APIStatusError)  # a mid-stream error chunk
    assert raised.value.code == "invalid_prompt"
    assert raised.value.message

    with pytest.raises(openai.BadRequestError) as too_long:
        await run("word " * CONTEXT_WINDOW, 10)
    assert too_long.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as too_long:
        await client.responses.create(
            model=MODEL, input="word " * CONTEXT_WINDOW, background=True, stream=True
        )
    assert too_long.value.code == "context_length_exceeded"


async def test_without_background_support(tmp_path: Path) -> None:
    """``SIM_BACKGROUND_SUPPORTED=false``: like llama.cpp, ``background`` is ignored and
    nothing can be retrieved or cancelled by id (what a capability probe looks for)."""
    with running_simulator(
        tmp_path / "simulator.log",
        SIM_TOKENS_PER_SECOND="5000",
        SIM_BACKGROUND_SUPPORTED="false",
    ) as simulator:
        async with (
            httpx.AsyncClient(base_url=simulator.url, timeout=30) as http,
            AsyncOpenAI(
                base_url=f"{simulator.url}/v1", api_key="simulator", max_retries=0, timeout=30
            ) as plain,
        ):
            raw = await http.post(
                "/v1/responses", json=_create_body(unique_prompt("plain"), CUT, background=True)
            )
            response = strict(Response, raw.json())
            assert response.status == "incomplete" and response.background is False
            assert (await http.get(f"/v1/responses/{response.id}")).status_code == 404
            assert (await http.post(f"/v1/responses/{response.id}/cancel")).status_code == 404

            events, clean = await _stream_response(
                http, _create_body(unique_prompt("plain stream"), CUT, background=True)
            )
            assert clean
            assert _types(events)[: len(FOREGROUND_PREAMBLE)] == list(FOREGROUND_PREAMBLE)
            assert _types(events)[-1] == "response.incomplete"

            stream = await plain.responses.create(
                model=MODEL,
                input=unique_prompt("probe"),
                max_output_tokens=5,
                background=True,
                stream=True,
            )
            first = await _collect(stream)
            assert first[0].response.status == "in_progress"
            assert first[0].response.background is False
            with pytest.raises(openai.NotFoundError):
                await plain.responses.retrieve(first[0].response.id)
            with pytest.raises(openai.NotFoundError):
                await plain.responses.retrieve(first[0].response.id, stream=True, starting_after=1)
            with pytest.raises(openai.NotFoundError):
                await plain.responses.cancel(first[0].response.id)
