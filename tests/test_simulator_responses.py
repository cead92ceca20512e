"""End-to-end tests of the simulator's Responses API subset (background mode, resume by
sequence number, cancel, expiry): a real server process and the real ``openai`` client.
The wire format itself is checked against the SDK's types in ``test_simulator_contract``."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pydantic
import pytest
from openai import AsyncOpenAI
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseContentPartAddedEvent,
    ResponseContentPartDoneEvent,
    ResponseCreatedEvent,
    ResponseFailedEvent,
    ResponseIncompleteEvent,
    ResponseInProgressEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseQueuedEvent,
    ResponseStreamEvent,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
)

from llm_simulator.text import MARKER, SimulatedReply, simulated_reply, simulated_tokens
from testing.oracle import prompt_with_natural_length
from testing.simulator import running_simulator

MODEL = "sim-responses-model"
TOKENS_PER_SECOND = 500
INSTRUCTIONS = "You are a test."
#: Events before the first delta of a background stream: created, queued, in_progress,
#: output_item.added, content_part.added (a foreground stream has no queued event).
PREAMBLE = 5
FOREGROUND_PREAMBLE = 4
#: Events after the last delta: output_text.done, content_part.done, output_item.done, and
#: completed (natural end) or incomplete (cut at max_output_tokens).
TAIL = 4
#: A limit above every natural reply (they end with response.completed).
UNCUT = 2000

EVENT_TYPES = pydantic.TypeAdapter(ResponseStreamEvent)


@pytest.fixture(scope="module")
def simulator_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One simulator for the module: TTFT 20 ms, 500 tokens/s, default response TTL."""
    log_path = tmp_path_factory.mktemp("simulator-responses") / "simulator.log"
    with running_simulator(log_path, SIM_TOKENS_PER_SECOND=str(TOKENS_PER_SECOND)) as simulator:
        yield simulator.url


@pytest.fixture(autouse=True)
def _disarm_faults(simulator_url: str) -> Iterator[None]:
    yield
    httpx.delete(f"{simulator_url}/sim/faults", timeout=5).raise_for_status()


def _openai_client(url: str) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{url}/v1", api_key="simulator", max_retries=0, timeout=30)


@pytest.fixture
async def client(simulator_url: str) -> AsyncIterator[AsyncOpenAI]:
    async with _openai_client(simulator_url) as openai_client:
        yield openai_client


@pytest.fixture
async def sim(simulator_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=simulator_url, timeout=30) as http:
        yield http


def _unique(label: str) -> str:
    return f"{label} {uuid.uuid4().hex}"


def _chat_messages(prompt: str) -> list[dict[str, Any]]:
    """The chat messages equivalent to ``instructions=INSTRUCTIONS, input=prompt``."""
    return [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": prompt}]


def _expected(prompt: str, max_tokens: int, temperature: float = 1.0) -> str:
    return "".join(simulated_tokens(_chat_messages(prompt), MODEL, max_tokens, temperature))


def _prompt(label: str, *, at_least: int = 0, at_most: int = 10_000) -> tuple[str, SimulatedReply]:
    """A unique prompt (with INSTRUCTIONS) whose natural reply length is in the range."""
    return prompt_with_natural_length(
        label, MODEL, at_least=at_least, at_most=at_most, instructions=INSTRUCTIONS
    )


async def _prompt_stats(sim: httpx.AsyncClient, prompt: str) -> dict[str, int] | None:
    response = await sim.get("/sim/stats")
    response.raise_for_status()
    by_prompt: dict[str, dict[str, int]] = response.json()["by_prompt"]
    return by_prompt.get(prompt)


async def _eventually(check: Callable[[], Awaitable[bool]], within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        await asyncio.sleep(0.05)


async def _create_background(
    client: AsyncOpenAI, prompt: str, max_output_tokens: int, **kwargs: Any
) -> Response:
    return await client.responses.create(
        model=MODEL,
        instructions=INSTRUCTIONS,
        input=prompt,
        max_output_tokens=max_output_tokens,
        background=True,
        **kwargs,
    )


async def _read_events(stream: Any, into: list[Any]) -> None:
    async for event in stream:
        into.append(event)


def _deltas(events: list[Any]) -> str:
    return "".join(event.delta for event in events if event.type == "response.output_text.delta")


def _assert_contiguous(events: list[Any], first: int = 0) -> None:
    numbers = [event.sequence_number for event in events]
    assert numbers == list(range(first, first + len(numbers)))


async def test_background_stream_reads_to_completion_like_chat_completions(
    client: AsyncOpenAI, sim: httpx.AsyncClient
) -> None:
    prompt = _unique("background stream")
    # Input as a list of messages with content parts, including an earlier assistant turn.
    conversation = [
        {"role": "user", "content": [{"type": "input_text", "text": "first question"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "first answer"}]},
        {"role": "user", "content": prompt},
    ]
    chat_messages = [
        {"role": "system", "content": INSTRUCTIONS},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": prompt},
    ]
    reply = simulated_reply(chat_messages, MODEL, 60, 0.4)
    n = len(reply.tokens)
    stream = await client.responses.create(
        model=MODEL,
        instructions=INSTRUCTIONS,
        input=conversation,  # type: ignore[arg-type]
        max_output_tokens=60,
        temperature=0.4,
        background=True,
        stream=True,
    )
    events: list[Any] = []
    await _read_events(stream, events)
    assert await _prompt_stats(sim, prompt) == {"started": 1, "completed": 1}

    chat = await client.chat.completions.create(
        model=MODEL,
        messages=chat_messages,  # type: ignore[arg-type]
        max_tokens=60,
        temperature=0.4,
    )
    expected = chat.choices[0].message.content
    assert expected is not None and expected.startswith(MARKER)
    assert chat.choices[0].finish_reason == reply.finish_reason
    assert expected == "".join(reply.tokens)

    kinds = [type(event) for event in events]
    assert kinds == [
        ResponseCreatedEvent,
        ResponseQueuedEvent,
        ResponseInProgressEvent,
        ResponseOutputItemAddedEvent,
        ResponseContentPartAddedEvent,
        *[ResponseTextDeltaEvent] * n,
        ResponseTextDoneEvent,
        ResponseContentPartDoneEvent,
        ResponseOutputItemDoneEvent,
        ResponseCompletedEvent if reply.finish_reason == "stop" else ResponseIncompleteEvent,
    ]
    _assert_contiguous(events)
    assert _deltas(events) == expected

    created, completed = events[0], events[-1]
    assert created.response.status == "queued"
    assert created.response.background is True
    item_id = events[3].item.id
    assert all(event.item_id == item_id for event in events if hasattr(event, "item_id"))
    assert events[-4].text == expected
    final = completed.response
    assert final.id == created.response.id
    assert final.object == "response"
    assert final.status == ("completed" if reply.finish_reason == "stop" else "incomplete")
    assert final.model == MODEL
    assert final.output_text == expected
    assert len(final.output) == 1 and final.output[0].type == "message"
    assert final.output[0].content[0].type == "output_text"
    assert final.usage is not None
    assert chat.usage is not None
    assert final.usage.output_tokens == n == chat.usage.completion_tokens
    assert final.usage.input_tokens == chat.usage.prompt_tokens
    assert final.usage.total_tokens == final.usage.input_tokens + n
    assert final.usage.output_tokens_details.reasoning_tokens == 0

    retrieved = await client.responses.retrieve(final.id)
    assert retrieved.status == final.status
    assert retrieved.output_text == expected


async def test_raw_events_match_the_openai_schema(
    simulator_url: str, sim: httpx.AsyncClient
) -> None:
    """Every SSE event validates strictly against the client's types (not just constructs)."""
    body = {
        "model": MODEL,
        "input": _unique("schema"),
        "instructions": INSTRUCTIONS,
        "max_output_tokens": 12,
        "background": True,
        "stream": True,
    }
    raw_events: list[tuple[str, dict[str, Any]]] = []
    async with sim.stream("POST", "/v1/responses", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                raw_events.append((name, json.loads(line.removeprefix("data: "))))
    assert len(raw_events) == PREAMBLE + 12 + TAIL  # 12 < any natural length: incomplete
    assert raw_events[-1][0] == "response.incomplete"
    for name, data in raw_events:
        assert name == data["type"]
        event = EVENT_TYPES.validate_python(data)
        assert event.type == name
    response_id = raw_events[0][1]["response"]["id"]
    Response.model_validate(raw_events[-1][1]["response"])
    Response.model_validate((await sim.get(f"/v1/responses/{response_id}")).json())
    # The openai client sends booleans in the query as "true"; accept the same here.
    replay = await sim.get(f"/v1/responses/{response_id}?stream=true&starting_after=15")
    assert [json.loads(line[6:])["sequence_number"] for line in replay.text.splitlines()
            if line.startswith("data: ")] == [16, 17, 18, 19, 20]  # fmt: skip


async def test_disconnect_fault_then_resume_gets_exactly_the_missing_events(
    client: AsyncOpenAI, sim: httpx.AsyncClient
) -> None:
    await sim.post("/sim/faults", json={"fault": "disconnect", "after_tokens": 7})
    prompt, reply = _prompt("resume", at_least=160, at_most=290)
    expected = _expected(prompt, 300)
    n = reply.natural_tokens

    stream = await _create_background(client, prompt, 300, stream=True)
    first: list[Any] = []
    with pytest.raises(openai.APIConnectionError):
        await _read_events(stream, first)
    assert len(first) == PREAMBLE + 7  # the connection was cut after 7 deltas
    _assert_contiguous(first)
    response_id = first[0].response.id
    last_seq = first[-1].sequence_number

    resumed = await client.responses.retrieve(response_id, stream=True, starting_after=last_seq)
    rest: list[Any] = []
    await _read_events(resumed, rest)
    assert rest[0].sequence_number == last_seq + 1  # no gap
    _assert_contiguous(first + rest)  # no gap, nothing twice
    assert _deltas(first) + _deltas(rest) == expected
    assert isinstance(rest[-1], ResponseCompletedEvent)
    assert rest[-1].response.output_text == expected
    assert len(first + rest) == PREAMBLE + n + TAIL

    # Re-attaching again (from the start, from the middle) replays the same events.
    again = await client.responses.retrieve(response_id, stream=True)
    replay: list[Any] = []
    await _read_events(again, replay)
    assert [(e.sequence_number, e.type) for e in replay] == [
        (e.sequence_number, e.type) for e in first + rest
    ]
    middle = await client.responses.retrieve(response_id, stream=True, starting_after=150)
    tail: list[Any] = []
    await _read_events(middle, tail)
    assert [e.sequence_number for e in tail] == list(range(151, PREAMBLE + n + TAIL))

    # However often it was attached, it is one generation.
    assert await _prompt_stats(sim, prompt) == {"started": 1, "completed": 1}
    recent = (await sim.get("/sim/requests", params={"limit": 1})).json()
    assert recent[-1]["api"] == "responses"
    assert recent[-1]["response_id"] == response_id


async def test_stream_helper_resumes_from_a_sequence_number(client: AsyncOpenAI) -> None:
    """``client.responses.stream(response_id=..., starting_after=N)`` works unchanged."""
    prompt, _ = _prompt("helper", at_most=150)
    expected = _expected(prompt, UNCUT)
    async with client.responses.stream(
        model=MODEL,
        instructions=INSTRUCTIONS,
        input=prompt,
        max_output_tokens=UNCUT,
        background=True,
    ) as stream:
        final = await stream.get_final_response()
    assert final.output_text == expected

    async with client.responses.stream(response_id=final.id, starting_after=20) as resumed:
        events = [event async for event in resumed]
        resumed_final = await resumed.get_final_response()
    assert events[0].sequence_number == 21
    assert resumed_final.output_text == expected


async def test_generation_runs_on_with_no_client_attached(
    client: AsyncOpenAI, sim: httpx.AsyncClient
) -> None:
    prompt, reply = _prompt("unattended", at_least=250, at_most=400)  # 0.5-0.8 s at 500 tokens/s
    expected = _expected(prompt, UNCUT)
    stream = await _create_background(client, prompt, UNCUT, stream=True)
    async for event in stream:
        assert event.type == "response.created"
        response_id = event.response.id
        break
    await stream.close()

    running = await client.responses.retrieve(response_id)
    assert running.status in ("queued", "in_progress")
    assert running.usage is None
    assert expected.startswith(running.output_text)

    # Counted as completed when its last token is produced, with no client attached.
    async def completed() -> bool:
        return await _prompt_stats(sim, prompt) == {"started": 1, "completed": 1}

    await _eventually(completed)
    done = await client.responses.retrieve(response_id)
    assert done.status == "completed"
    assert done.output_text == expected
    assert done.completed_at is not None
    assert done.usage is not None and done.usage.output_tokens == reply.natural_tokens

    # Non-streaming background create: answers at once, runs on.
    queued = await _create_background(client, _unique("polled"), 200)
    assert queued.status == "queued"
    assert queued.background is True
    assert queued.output == []

    async def finished() -> bool:  # 200 tokens: completed or cut, depending on the prompt
        return (await client.responses.retrieve(queued.id)).status in ("completed", "incomplete")

    await _eventually(finished)


async def test_foreground_responses(client: AsyncOpenAI, sim: httpx.AsyncClient) -> None:
    prompt = _unique("foreground")
    # Defaults (max tokens, temperature) are the chat completions defaults.
    response = await client.responses.create(model=MODEL, instructions=INSTRUCTIONS, input=prompt)
    finish = simulated_reply(_chat_messages(prompt), MODEL, 300, 1.0).finish_reason
    assert response.status == ("completed" if finish == "stop" else "incomplete")
    assert response.background is False
    assert response.output_text == _expected(prompt, 300, 1.0)
    chat = await client.chat.completions.create(
        model=MODEL,
        messages=_chat_messages(prompt),  # type: ignore[arg-type]
    )
    assert chat.choices[0].message.content == response.output_text
    assert (await client.responses.retrieve(response.id)).output_text == response.output_text
    with pytest.raises(openai.BadRequestError):  # only background responses stream again
        await client.responses.retrieve(response.id, stream=True)
    with pytest.raises(openai.BadRequestError):  # only background responses can be cancelled
        await client.responses.cancel(response.id)

    # A foreground stream whose client goes away is cancelled (like chat completions).
    dropped_prompt, _ = prompt_with_natural_length("foreground dropped", MODEL, at_least=600)
    stream = await client.responses.create(
        model=MODEL, input=dropped_prompt, max_output_tokens=UNCUT, stream=True
    )
    received = 0
    response_id = ""
    async for event in stream:
        if isinstance(event, ResponseCreatedEvent):
            response_id = event.response.id
        received += 1
        if received == FOREGROUND_PREAMBLE + 3:
            break
    await stream.close()

    async def cancelled() -> bool:  # terminal: it can never complete any more
        return (await client.responses.retrieve(response_id)).status == "cancelled"

    await _eventually(cancelled)
    assert await _prompt_stats(sim, dropped_prompt) == {"started": 1, "completed": 0}

    # store=false: generated, but not retrievable.
    unstored = await client.responses.create(
        model=MODEL, input=_unique("unstored"), max_output_tokens=5, store=False
    )
    assert unstored.status == "incomplete"  # 5 tokens: cut at the limit
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(unstored.id)


async def test_cancel_background_response(client: AsyncOpenAI, sim: httpx.AsyncClient) -> None:
    prompt, _ = _prompt("cancel", at_least=800)  # 1.6 s or more at 500 tokens/s
    expected = _expected(prompt, UNCUT)
    created = await _create_background(client, prompt, UNCUT)
    stream = await client.responses.retrieve(created.id, stream=True)
    events: list[Any] = []
    reader = asyncio.create_task(_read_events(stream, events))
    await asyncio.sleep(0.3)

    cancelled = await client.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    await asyncio.wait_for(reader, 5)  # the attached stream ends
    terminal = events[-1]  # the API has no cancellation event: a failed one, status cancelled
    assert isinstance(terminal, ResponseFailedEvent)
    assert terminal.response.status == "cancelled"
    _assert_contiguous(events)
    partial = _deltas(events)
    assert 0 < len(partial) < len(expected)
    assert expected.startswith(partial)

    again = await client.responses.cancel(created.id)  # idempotent
    assert again.status == "cancelled"
    retrieved = await client.responses.retrieve(created.id)
    assert retrieved.status == "cancelled"
    assert retrieved.output_text == partial
    assert retrieved.usage is not None
    assert retrieved.usage.output_tokens == len(events) - PREAMBLE - 1
    # Re-attaching to a cancelled response replays up to the same terminal event.
    replay = await client.responses.retrieve(created.id, stream=True, starting_after=PREAMBLE)
    replayed: list[Any] = []
    await _read_events(replay, replayed)
    assert [e.sequence_number for e in replayed] == [
        e.sequence_number for e in events[PREAMBLE + 1 :]
    ]
    assert await _prompt_stats(sim, prompt) == {"started": 1, "completed": 0}

    finished = await _create_background(client, _unique("cancel finished"), 5)

    async def done() -> bool:  # 5 tokens: cut at the limit
        return (await client.responses.retrieve(finished.id)).status == "incomplete"

    await _eventually(done)
    with pytest.raises(openai.BadRequestError) as raised:
        await client.responses.cancel(finished.id)
    assert "incomplete" in raised.value.message


async def test_unknown_ids_get_404(client: AsyncOpenAI, sim: httpx.AsyncClient) -> None:
    unknown = "resp_" + uuid.uuid4().hex
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(unknown)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(unknown, stream=True, starting_after=3)
    with pytest.raises(openai.NotFoundError):
        await client.responses.cancel(unknown)
    with pytest.raises(openai.NotFoundError):
        await client.responses.delete(unknown)
    raw = await sim.get(f"/v1/responses/{unknown}")
    assert raw.status_code == 404
    error = raw.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert unknown in error["message"]

    # Deleting forgets at once.
    created = await _create_background(client, _unique("deleted"), 5)
    await client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(created.id)


async def test_http_faults_refuse_the_create(client: AsyncOpenAI, sim: httpx.AsyncClient) -> None:
    prompt = _unique("refused")
    await sim.post("/sim/faults", json={"fault": "http_429", "retry_after_s": 4})
    with pytest.raises(openai.RateLimitError) as limited:
        await _create_background(client, prompt, 5, stream=True)
    assert limited.value.response.headers["retry-after"] == "4"
    await sim.post("/sim/faults", json={"fault": "http_500"})
    with pytest.raises(openai.InternalServerError):
        await _create_background(client, prompt, 5)
    assert await _prompt_stats(sim, prompt) is None  # no generation started
    assert (await _create_background(client, prompt, 5)).status == "queued"


async def test_disconnect_fault_on_a_foreground_stream_cancels_it(
    client: AsyncOpenAI, sim: httpx.AsyncClient
) -> None:
    await sim.post("/sim/faults", json={"fault": "disconnect", "after_tokens": 3})
    prompt = _unique("foreground cut")
    stream = await client.responses.create(
        model=MODEL, input=prompt, max_output_tokens=50, stream=True
    )
    events: list[Any] = []
    with pytest.raises(openai.APIConnectionError):
        await _read_events(stream, events)
    assert len(events) == FOREGROUND_PREAMBLE + 3
    assert (await client.responses.retrieve(events[0].response.id)).status == "cancelled"
    assert await _prompt_stats(sim, prompt) == {"started": 1, "completed": 0}


async def test_invalid_create_requests(sim: httpx.AsyncClient) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"model": MODEL}, "input"),
        ({"model": MODEL, "input": "x", "max_output_tokens": 8193}, "max_output_tokens"),
        ({"model": MODEL, "input": "x", "background": True, "store": False}, "store"),
        ({"model": MODEL, "input": "x", "previous_response_id": "resp_1"}, "previous_response_id"),
        ({"model": MODEL, "input": [{"role": "user", "content": [{"type": "input_image"}]}]}, ""),
    ]
    for body, param in cases:
        response = await sim.post("/v1/responses", json=body)
        assert response.status_code == 400, body
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert param in (error["param"] or "")


async def test_requests_log_names_the_api(client: AsyncOpenAI, sim: httpx.AsyncClient) -> None:
    prompt = _unique("logged")
    await client.chat.completions.create(
        model=MODEL,
        messages=_chat_messages(prompt),  # type: ignore[arg-type]
        max_tokens=5,
    )
    created = await _create_background(client, prompt, 5, temperature=0.7)
    chat_entry, responses_entry = (await sim.get("/sim/requests", params={"limit": 2})).json()
    assert chat_entry["api"] == "chat.completions"
    assert responses_entry["api"] == "responses"
    assert responses_entry["response_id"] == created.id
    assert responses_entry["messages"] == _chat_messages(prompt)
    assert responses_entry["max_tokens"] == 5
    assert responses_entry["temperature"] == 0.7
    assert responses_entry["background"] is True
    assert responses_entry["stream"] is False


async def test_finished_responses_expire_after_the_ttl(tmp_path: Path) -> None:
    with running_simulator(
        tmp_path / "simulator.log",
        SIM_TOKENS_PER_SECOND=str(TOKENS_PER_SECOND),
        SIM_RESPONSE_TTL_S="1",
    ) as simulator:
        async with _openai_client(simulator.url) as client:
            finished = await client.responses.create(
                model=MODEL, input=_unique("expiring"), max_output_tokens=5
            )
            assert (await client.responses.retrieve(finished.id)).status == "incomplete"
            # 850+ tokens take 1.7 s or more: longer than the TTL, but a running response never
            # expires.
            long_prompt, long_reply = _prompt("long", at_least=850, at_most=990)
            running = await _create_background(client, long_prompt, 1000)
            await asyncio.sleep(1.3)
            with pytest.raises(openai.NotFoundError):
                await client.responses.retrieve(finished.id)
            assert (await client.responses.retrieve(running.id)).status == "in_progress"

            async def done() -> bool:
                return (await client.responses.retrieve(running.id)).status == "completed"

            await _eventually(done)
            resumed = await client.responses.retrieve(running.id, stream=True, starting_after=0)
            assert len([event async for event in resumed]) == (
                PREAMBLE + long_reply.natural_tokens + TAIL - 1
            )
            await asyncio.sleep(1.3)
            with pytest.raises(openai.NotFoundError):
                await client.responses.retrieve(running.id)
            with pytest.raises(openai.NotFoundError):
                await client.responses.retrieve(running.id, stream=True, starting_after=0)
