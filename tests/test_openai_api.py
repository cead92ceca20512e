"""/v1, the OpenAI-compatible API, driven by the official `openai` Python SDK (sync and
async) against the real stack: every object and event checked against the SDK's own
types, resumes exact across a dropped stream, a worker's kill -9, a gateway's crash
and another gateway process; cancel, delete, idempotency, errors, and a provider that
can only restart."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types import Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response
from temporalio.client import Client

from api.v1.objects import workflow_id_of
from common.models import PurgeReport, PurgeRequest
from testing.chats import generations_for, wait_for
from testing.keys import TEST_API_KEYS
from testing.oracle import expected_answer, expected_reply, prompt_ending, unique_prompt
from testing.simulator import simulator_pace
from testing.stack import ROOT, LocalStack, free_port
from testing.workers import worker_process
from tests.helpers import keep_history
from tests.simulator_support import responses_event_types, strict, strict_event
from workflows.retention import PurgeExpiredResponsesWorkflow

MODEL = "simulator"


def _sync(url: str, user: str = "tester") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=TEST_API_KEYS[user], max_retries=0)


def _async(url: str, user: str = "tester") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=TEST_API_KEYS[user], max_retries=0)


@pytest.fixture
def sdk(fleet: LocalStack) -> Iterator[openai.OpenAI]:
    with _sync(fleet.gateway_url) as client:
        yield client


@pytest.fixture
async def asdk(fleet: LocalStack) -> AsyncIterator[openai.AsyncOpenAI]:
    async with _async(fleet.gateway_url) as client:
        yield client


async def _generating_worker(handle: Any) -> str | None:
    """Identity of the worker running the chat's generate_full_text now, if any."""
    description = await handle.describe()
    for pending in description.raw_description.pending_activities:
        if pending.activity_type.name == "generate_full_text" and pending.state == 2:
            return str(pending.last_worker_identity) or None
    return None


def _raw(event: Any) -> dict[str, Any]:
    return event.model_dump(mode="json", exclude_unset=True)  # type: ignore[no-any-return]


def _check_stream(events: list[Any], *, background: bool, end: str) -> str:
    """Every event strictly of its SDK type, numbered 0, 1, 2, ... in the documented
    order; returns the text of the deltas, which must equal the done text."""
    for event in events:
        strict_event(_raw(event))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert [e.type for e in events] == responses_event_types(
        background=background, deltas=len(deltas), end=end
    )
    text = "".join(deltas)
    if end in ("completed", "incomplete"):
        (done,) = [e for e in events if e.type == "response.output_text.done"]
        assert done.text == text
        assert events[-1].response.output_text == text
    return text


def test_create_retrieve_and_models_are_the_sdk_types(sdk: openai.OpenAI) -> None:
    prompt = prompt_ending("stop", 300, "A short answer")
    response = sdk.responses.create(
        model=MODEL,
        input=prompt,
        max_output_tokens=300,
        metadata={"ticket": "42"},
        text={"format": {"type": "text"}, "verbosity": "low"},
    )
    strict(Response, _raw(response))
    assert response.status == "completed" and response.error is None
    assert response.metadata == {"ticket": "42"}
    assert response.output_text == expected_answer(prompt, 300)
    assert response.usage is not None and response.usage.output_tokens > 0
    again = sdk.responses.retrieve(response.id)
    strict(Response, _raw(again))
    assert again.output_text == response.output_text and again.usage == response.usage

    cut = prompt_ending("length", 40, "A long answer")
    incomplete = sdk.responses.create(model=MODEL, input=cut, max_output_tokens=40)
    assert incomplete.status == "incomplete"
    assert incomplete.incomplete_details is not None
    assert incomplete.incomplete_details.reason == "max_output_tokens"
    assert incomplete.output_text == expected_answer(cut, 40)

    models = sdk.models.list()
    assert [m.id for m in models.data] == [MODEL, "other-model"]  # ALLOWED_MODELS
    strict(Model, _raw(models.data[0]))
    assert sdk.models.retrieve(MODEL).id == MODEL


def test_streams_in_the_documented_order_foreground_and_background(sdk: openai.OpenAI) -> None:
    prompt = prompt_ending("stop", 300, "Stream it")
    foreground = list(
        sdk.responses.create(model=MODEL, input=prompt, max_output_tokens=300, stream=True)
    )
    assert _check_stream(foreground, background=False, end="completed") == expected_answer(
        prompt, 300
    )
    cut = prompt_ending("length", 60, "Stream it long")
    background = list(
        sdk.responses.create(
            model=MODEL, input=cut, max_output_tokens=60, stream=True, background=True
        )
    )
    assert _check_stream(background, background=True, end="incomplete") == expected_answer(cut, 60)
    assert background[-1].response.incomplete_details.reason == "max_output_tokens"


def test_dropped_stream_resumes_exactly_with_starting_after(
    sdk: openai.OpenAI, fleet: LocalStack
) -> None:
    prompt = prompt_ending("length", 200, "Resume me")
    first: list[Any] = []
    with sdk.responses.create(
        model=MODEL, input=prompt, max_output_tokens=200, stream=True, background=True
    ) as stream:
        for event in stream:
            first.append(event)
            if sum(e.type == "response.output_text.delta" for e in first) == 2:
                break  # the client drops: the connection is closed here
    response_id = first[0].response.id
    rest = list(
        sdk.responses.retrieve(response_id, stream=True, starting_after=first[-1].sequence_number)
    )
    text = _check_stream(first + rest, background=True, end="incomplete")
    assert text == expected_answer(prompt, 200)
    # From the start, and from the middle again: the same events, numbered the same.
    replay = list(sdk.responses.retrieve(response_id, stream=True))
    assert [_raw(e) for e in replay] == [_raw(e) for e in first + rest]
    middle = list(sdk.responses.retrieve(response_id, stream=True, starting_after=4))
    assert [_raw(e) for e in middle] == [_raw(e) for e in replay[5:]]
    # Another gateway process serves the same stream identically.
    process, url = fleet.start_extra_gateway({})
    try:
        with _sync(url) as elsewhere:
            there = list(elsewhere.responses.retrieve(response_id, stream=True))
    finally:
        process.stop()
    assert [_raw(e) for e in there] == [_raw(e) for e in replay]


async def test_async_sdk_resumes_after_kill_9_of_the_generating_worker(
    fleet: LocalStack, temporal_client: Client, simulator: httpx.AsyncClient
) -> None:
    max_tokens = 400
    prompt = prompt_ending("length", max_tokens, "A long durable answer")
    async with simulator_pace(simulator, 120), _async(fleet.gateway_url) as client:
        stream = await client.responses.create(
            model=MODEL, input=prompt, max_output_tokens=max_tokens, stream=True, background=True
        )
        first: list[Any] = []
        async for event in stream:
            first.append(event)
            if event.type == "response.output_text.delta":
                break
        await stream.close()
        response_id = first[0].response.id
        workflow_id = (await client.responses.with_raw_response.retrieve(response_id)).headers[
            "x-durable-chat-workflow-id"
        ]
        handle = temporal_client.get_workflow_handle(workflow_id)
        identity = await wait_for(lambda: _generating_worker(handle), timeout_s=30)
        await asyncio.sleep(0.7)
        victim = worker_process(fleet, identity)
        assert victim is not None, identity
        victim.kill()
        fleet.start_worker()
        rest = [
            e
            async for e in await client.responses.retrieve(
                response_id, stream=True, starting_after=first[-1].sequence_number
            )
        ]
    text = _check_stream(first + rest, background=True, end="incomplete")
    assert text == expected_answer(prompt, max_tokens)
    # The generation was resumed, not restarted: the provider ran it once.
    assert await generations_for(simulator, prompt) == {"started": 1, "completed": 1}
    await keep_history(handle, "openai-api-worker-killed-mid-generation")


async def test_stream_survives_a_gateway_crash_and_resumes_on_a_new_gateway(
    fleet: LocalStack, simulator: httpx.AsyncClient
) -> None:
    max_tokens = 300
    prompt = prompt_ending("length", max_tokens, "Through a gateway crash")
    process, url = fleet.start_extra_gateway({})
    first: list[Any] = []
    async with simulator_pace(simulator, 150):
        try:
            async with _async(url) as client:
                stream = await client.responses.create(
                    model=MODEL,
                    input=prompt,
                    max_output_tokens=max_tokens,
                    stream=True,
                    background=True,
                )
                with pytest.raises((httpx.HTTPError, openai.APIError)):
                    async for event in stream:
                        first.append(event)
                        if event.type == "response.output_text.delta":
                            process.kill()  # SIGKILL mid-stream
        finally:
            process.stop()
        restarted, url2 = fleet.start_extra_gateway({})
        try:
            async with _async(url2) as client:
                rest = [
                    e
                    async for e in await client.responses.retrieve(
                        first[0].response.id,
                        stream=True,
                        starting_after=first[-1].sequence_number,
                    )
                ]
        finally:
            restarted.stop()
    assert _check_stream(first + rest, background=True, end="incomplete") == expected_answer(
        prompt, max_tokens
    )


async def test_cancel_and_delete(asdk: openai.AsyncOpenAI, simulator: httpx.AsyncClient) -> None:
    async with simulator_pace(simulator, 30):
        response = await asdk.responses.create(
            model=MODEL, input=unique_prompt("Cancel me"), max_output_tokens=500, background=True
        )
        assert response.status == "queued" and response.background is True
        strict(Response, _raw(response))

        async def generating() -> bool:
            return (await asdk.responses.retrieve(response.id)).status == "in_progress"

        await wait_for(generating, timeout_s=30)
        with pytest.raises(openai.ConflictError) as running:
            await asdk.responses.delete(response.id)
        assert "cancel it first" in running.value.message
        await asyncio.sleep(1.0)  # about 30 tokens streamed
        cancelled = await asdk.responses.cancel(response.id)
    strict(Response, _raw(cancelled))
    assert cancelled.status == "cancelled"
    # cancelled mid-answer: the text streamed so far is kept in `output`, billed
    assert cancelled.output_text and cancelled.usage is not None
    events = [e async for e in await asdk.responses.retrieve(response.id, stream=True)]
    assert events[-1].type == "response.failed" and events[-1].response.status == "cancelled"
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == cancelled.output_text == events[-1].response.output_text
    assert (await asdk.responses.cancel(response.id)).status == "cancelled"  # idempotent
    await asdk.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        await asdk.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        await asdk.responses.delete(response.id)


def test_chat_completions_streaming_and_not(sdk: openai.OpenAI) -> None:
    prompt = prompt_ending("stop", 300, "Chat completions")
    completion = sdk.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=300
    )
    strict(ChatCompletion, _raw(completion))
    choice = completion.choices[0]
    assert choice.finish_reason == "stop" and choice.message.content == expected_answer(prompt, 300)
    assert completion.usage is not None and completion.usage.completion_tokens > 0

    cut = prompt_ending("length", 50, "Chat completions cut")
    chunks = list(
        sdk.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": cut}],
            max_completion_tokens=50,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    for chunk in chunks:
        strict(ChatCompletionChunk, _raw(chunk))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected_answer(cut, 50)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 50


def test_a_system_message_and_previous_response_id_reach_the_model(sdk: openai.OpenAI) -> None:
    instructions = "Answer as a pirate."
    prompt = prompt_ending("stop", 300, "First turn")
    first = sdk.responses.create(
        model=MODEL, input=prompt, instructions=instructions, max_output_tokens=300
    )
    assert first.instructions == instructions
    assert first.output_text == "".join(
        expected_reply(prompt, 300, instructions=instructions).tokens
    )
    follow_up = unique_prompt("And then?")
    second = sdk.responses.create(
        model=MODEL, input=follow_up, previous_response_id=first.id, max_output_tokens=300
    )
    assert second.previous_response_id == first.id
    history = [
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": first.output_text},
    ]
    # Instructions are not carried over (as at OpenAI), the conversation is.
    assert second.output_text == expected_answer(follow_up, 300, history=history)
    # The same conversation as messages, through chat completions.
    completion = sdk.chat.completions.create(
        model=MODEL,
        messages=[*history, {"role": "user", "content": follow_up}],  # type: ignore[list-item]
        max_tokens=300,
    )
    assert completion.choices[0].message.content == second.output_text


def test_idempotency_key_starts_one_chat(sdk: openai.OpenAI, fleet: LocalStack) -> None:
    key = {"Idempotency-Key": unique_prompt("key")}
    prompt = unique_prompt("Idempotent")
    one = sdk.responses.create(
        model=MODEL, input=prompt, max_output_tokens=30, background=True, extra_headers=key
    )
    two = sdk.responses.create(
        model=MODEL, input=prompt, max_output_tokens=30, background=True, extra_headers=key
    )
    assert one.id == two.id
    with pytest.raises(openai.ConflictError) as reused:
        sdk.responses.create(
            model=MODEL,
            input=prompt + "!",
            max_output_tokens=30,
            background=True,
            extra_headers=key,
        )
    assert reused.value.code == "idempotency_key_reused"
    # Another user's key of the same name is another response.
    with _sync(fleet.gateway_url, "other") as other:
        theirs = other.responses.create(
            model=MODEL, input=prompt, max_output_tokens=30, background=True, extra_headers=key
        )
        assert theirs.id != one.id
        with pytest.raises(openai.NotFoundError):
            other.responses.retrieve(one.id)  # a response of one user is a 404 for another


def test_errors_have_openai_shape_and_sdk_classes(sdk: openai.OpenAI, fleet: LocalStack) -> None:
    with _sync(fleet.gateway_url) as client:
        bad = openai.OpenAI(
            base_url=f"{fleet.gateway_url}/v1", api_key="wrong-key-0123456789", max_retries=0
        )
        with pytest.raises(openai.AuthenticationError) as unauthenticated:
            bad.models.list()
        assert unauthenticated.value.code == "invalid_api_key"
        with pytest.raises(openai.NotFoundError) as unknown:
            client.responses.retrieve("resp_" + "0" * 32)
        assert unknown.value.body["message"].startswith("No response with id")  # type: ignore[index]
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve("not-a-response-id")
        with pytest.raises(openai.UnprocessableEntityError) as model:
            client.responses.create(model="gpt-unknown", input="hi")
        assert model.value.code == "model_not_found" and model.value.param == "model"
        assert "allowed: simulator, other-model" in model.value.message
        for kwargs, param in [
            ({"tools": [{"type": "web_search"}]}, "tools"),
            ({"text": {"format": {"type": "json_object"}}}, "text"),
            ({"top_p": 0.5}, "top_p"),
            ({"max_output_tokens": 10**6}, "max_output_tokens"),
            ({"background": True, "store": False}, "background"),
        ]:
            with pytest.raises(openai.BadRequestError) as refused:
                client.responses.create(model=MODEL, input="hi", **kwargs)  # type: ignore[arg-type]
            assert refused.value.param == param, (kwargs, refused.value.body)
        image = [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]
        with pytest.raises(openai.BadRequestError) as refused:
            client.responses.create(model=MODEL, input=image)  # type: ignore[arg-type]
        assert refused.value.param == "input[0].content[0].type"
        with pytest.raises(openai.BadRequestError) as empty:
            client.responses.create(model=MODEL, input="   ")
        assert "empty" in empty.value.message
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "hi"}],
                tools=[{"type": "function", "function": {"name": "f"}}],
            )
    # Raw: the error body is exactly OpenAI's shape.
    raw = httpx.get(f"{fleet.gateway_url}/v1/responses/resp_x", timeout=10)
    assert raw.status_code == 401
    assert set(raw.json()["error"]) == {"message", "type", "param", "code"}


def test_rate_limit_is_a_429_with_retry_after(fleet: LocalStack) -> None:
    process, url = fleet.start_extra_gateway({"RATE_LIMIT_PER_MINUTE": "2"})
    try:
        with _sync(url, "rate") as client:
            with pytest.raises(openai.RateLimitError) as limited:
                for _ in range(4):
                    client.responses.create(
                        model=MODEL,
                        input=unique_prompt("rate"),
                        max_output_tokens=5,
                        background=True,
                    )
        assert int(limited.value.response.headers["retry-after"]) >= 1
        assert limited.value.code == "rate_limit_exceeded"
    finally:
        process.stop()


def test_temporal_down_is_a_503_the_sdk_retries(fleet: LocalStack) -> None:
    closed = f"127.0.0.1:{free_port()}"
    process, url = fleet.start_extra_gateway({"TEMPORAL_ADDRESS": closed}, ready_path="/healthz")
    try:
        with _sync(url) as client:
            with pytest.raises(openai.InternalServerError) as unavailable:
                client.responses.create(model=MODEL, input=unique_prompt("down"), background=True)
        assert unavailable.value.status_code == 503
        assert unavailable.value.response.headers["retry-after"] == "2"
        assert unavailable.value.body["type"] == "server_error"  # type: ignore[index]
    finally:
        process.stop()


async def test_answer_cache_and_single_flight_apply_to_v1(
    asdk: openai.AsyncOpenAI, simulator: httpx.AsyncClient, gateway: httpx.AsyncClient
) -> None:
    prompt = prompt_ending("stop", 300, "Asked twice at once")
    async with simulator_pace(simulator, 300):
        one, two = await asyncio.gather(
            *(asdk.responses.create(model=MODEL, input=prompt, max_output_tokens=300) for _ in "12")
        )
    three = await asdk.responses.create(model=MODEL, input=prompt, max_output_tokens=300)
    assert one.output_text == two.output_text == three.output_text == expected_answer(prompt, 300)
    assert len({one.id, two.id, three.id}) == 3
    # One LLM call answered all three: single flight, then the cache.
    assert await generations_for(simulator, prompt) == {"started": 1, "completed": 1}
    workflow_id = workflow_id_of(three.id)
    status = (await gateway.get(f"/api/workflows/{workflow_id}/status")).json()
    assert status["cache_hit"] is True and status["cost_usd"] == 0.0


def test_store_false_is_not_retrievable(sdk: openai.OpenAI) -> None:
    prompt = prompt_ending("stop", 200, "Do not keep this")
    events = list(
        sdk.responses.create(
            model=MODEL, input=prompt, max_output_tokens=200, stream=True, store=False
        )
    )
    assert _check_stream(events, background=False, end="completed") == expected_answer(prompt, 200)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(events[0].response.id)


async def test_restart_mode_streams_only_text_that_stays(
    fleet: LocalStack, temporal_client: Client, simulator: httpx.AsyncClient, db: Any
) -> None:
    """A provider that cannot resume (GENERATION_MODE=restart, as with llama.cpp): a
    worker killed mid-generation means a new generation whose preview replaces the
    first one's. The /v1 stream gives only text that stays (the checkpointed answer),
    so no client is shown text that is then taken back."""
    max_tokens = 300
    prompt = prompt_ending("length", max_tokens, "Restart mode through /v1")
    process, url = fleet.start_extra_gateway({"GENERATION_MODE": "restart"})
    try:
        async with simulator_pace(simulator, 150), _async(url) as client:
            created = await client.responses.with_raw_response.create(
                model=MODEL, input=prompt, max_output_tokens=max_tokens, background=True
            )
            workflow_id = created.headers["x-durable-chat-workflow-id"]
            handle = temporal_client.get_workflow_handle(workflow_id)
            identity = await wait_for(lambda: _generating_worker(handle), timeout_s=30)
            await asyncio.sleep(0.7)  # some preview is out
            victim = worker_process(fleet, identity)
            assert victim is not None, identity
            victim.kill()
            fleet.start_worker()
            response_id = created.parse().id
            events = [e async for e in await client.responses.retrieve(response_id, stream=True)]
    finally:
        process.stop()
    assert _check_stream(events, background=True, end="incomplete") == expected_answer(
        prompt, max_tokens
    )
    # The chat's own log shows the restart that /v1 kept from its client.
    resets = await db.fetchval(
        "SELECT count(*) FROM chat_events WHERE workflow_id = $1 AND type = 'reset'", workflow_id
    )
    assert resets >= 1
    assert (await generations_for(simulator, prompt))["started"] == 2


async def _purge_pass(temporal_client: Client) -> PurgeReport:
    """One retention pass, as the schedule starts it."""
    handle = await temporal_client.start_workflow(
        PurgeExpiredResponsesWorkflow.run,
        PurgeRequest(),
        id=f"purge-test-{uuid.uuid4()}",
        task_queue="chat-queue",
    )
    report: PurgeReport = await handle.result()
    await keep_history(handle, "retention-pass")
    return report


async def test_retention_deletes_expired_responses_and_keeps_their_cost(
    fleet: LocalStack, temporal_client: Client, db: Any, gateway: httpx.AsyncClient
) -> None:
    # A retention of 0.4 s, and store=false: both are expired once they are finished.
    process, url = fleet.start_extra_gateway({"RESPONSES_RETENTION_DAYS": str(0.4 / 86_400)})
    try:
        async with _async(url) as client:
            kept = await client.responses.create(
                model=MODEL, input=unique_prompt("Expires"), max_output_tokens=30
            )
            unstored = await client.responses.create(
                model=MODEL, input=unique_prompt("Not stored"), max_output_tokens=30, store=False
            )
            assert kept.status == unstored.status == "incomplete"
            await asyncio.sleep(0.5)
            report = await _purge_pass(temporal_client)
            assert report.deleted >= 2
            with pytest.raises(openai.NotFoundError):
                await client.responses.retrieve(kept.id)
    finally:
        process.stop()
    for response_id in (kept.id, unstored.id):
        workflow_id = workflow_id_of(response_id)
        texts = await db.fetchval(
            "SELECT (SELECT count(*) FROM chunks WHERE workflow_id = $1)"
            " + (SELECT count(*) FROM chat_events WHERE workflow_id = $1)"
            " + (SELECT count(*) FROM responses WHERE workflow_id = $1)",
            workflow_id,
        )
        assert texts == 0
        assert (
            await db.fetchval("SELECT prompt FROM generations WHERE workflow_id = $1", workflow_id)
            == ""
        )
        # The cost record stays: the chat's calls are still counted.
        status = (await gateway.get(f"/api/workflows/{workflow_id}/status")).json()
        assert status["llm_calls"] == 1 and status["cost_usd"] is not None


def test_the_readme_example_runs(fleet: LocalStack, capsys: pytest.CaptureFixture[str]) -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- v1-example")[1].split("```python\n")[1].split("```")[0]
    code = block.replace("http://localhost:8000", fleet.gateway_url)
    exec(compile(code, "README.md", "exec"), {"KEY": TEST_API_KEYS["tester"]})
    printed = capsys.readouterr().out.split()
    assert "response.output_text.delta" in printed
    assert printed[-1] in ("response.completed", "response.incomplete")
