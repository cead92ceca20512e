"""Every way a generation ends at the provider, through the real activity code.

The simulator is a twin of OpenAI's two APIs (tests/test_simulator_contract.py holds it
to the `openai` SDK's types); its faults are armed at run time (`POST /sim/faults`).
Each end is run in both generation modes where both APIs have it: `resume` (Responses
API, background mode) and `restart` (chat completions).

The session stack's workers run with short provider bounds (tests/conftest.py APP_ENV):
an outage fails a chat after 8 s, a stream quiet for 5 s is broken, a response queued
for 3 s is given up.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest
from temporalio.client import Client, WorkflowFailureError

from common.models import ChatRequest, GenerationMode
from testing.chats import (
    generations_for,
    read_all_chunks,
    start_chat,
    start_chat_directly,
    wait_for,
    wait_status,
)
from testing.keys import auth_headers
from testing.oracle import expected_answer, expected_reply, prompt_ending, unique_prompt
from testing.simulator import running_simulator, simulator_fault, simulator_pace
from testing.sse import read_sse
from testing.stack import ROOT, LocalStack, ManagedProcess
from testing.workers import own_worker
from tests.helpers import keep_history

MODES = [GenerationMode.RESUME, GenerationMode.RESTART]


async def _run(
    temporal_client: Client, gateway: httpx.AsyncClient, prompt: str, max_tokens: int,
    mode: GenerationMode, *, use_cache: bool = False, **request: Any,
) -> tuple[str, dict[str, Any]]:  # fmt: skip
    """Run one chat in `mode` to its end; return its id and final status."""
    handle = await start_chat_directly(
        temporal_client,
        ChatRequest(
            prompt=prompt, max_tokens=max_tokens, generation_mode=mode, use_cache=use_cache,
            **request,
        ),
    )  # fmt: skip
    with contextlib.suppress(WorkflowFailureError):  # the caller asserts how it ended
        await asyncio.wait_for(handle.result(rpc_timeout=None), timeout=60)
    status = await wait_status(gateway, handle.id, {"completed", "failed", "cancelled"})
    return handle.id, status


async def _text(gateway: httpx.AsyncClient, workflow_id: str) -> str:
    return "".join(c["text"] for c in await read_all_chunks(gateway, workflow_id))


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
async def test_answer_cut_at_the_limit_is_kept_and_says_so(
    temporal_client, gateway, simulator, mode
) -> None:
    prompt = prompt_ending("length", 60)
    workflow_id, status = await _run(temporal_client, gateway, prompt, 60, mode, use_cache=True)
    assert status["status"] == "completed", status
    assert status["finish_reason"] == "length"
    assert status["notice"].startswith("Cut at 60 tokens")
    assert status["usage"]["completion_tokens"] == 60
    assert status["llm_calls"] == 1
    assert await _text(gateway, workflow_id) == expected_answer(prompt, 60)
    assert await generations_for(simulator, prompt) == {"started": 1, "completed": 1}
    # Cached like any answer, and a hit says it was cut too.
    hit_id, hit = await _run(temporal_client, gateway, prompt, 60, mode, use_cache=True)
    assert hit["cache_hit"] and hit["finish_reason"] == "length" and hit["llm_calls"] == 0
    assert await _text(gateway, hit_id) == expected_answer(prompt, 60)
    assert await generations_for(simulator, prompt) == {"started": 1, "completed": 1}


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
async def test_natural_end_is_stop(temporal_client, gateway, mode) -> None:
    prompt = prompt_ending("stop", 2000)
    reply = expected_reply(prompt, 2000)
    workflow_id, status = await _run(temporal_client, gateway, prompt, 2000, mode)
    assert status["status"] == "completed", status
    assert status["finish_reason"] == "stop" and status["notice"] is None
    assert status["usage"]["completion_tokens"] == reply.natural_tokens
    assert await _text(gateway, workflow_id) == "".join(reply.tokens)


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
async def test_content_filter_keeps_what_was_produced_with_a_notice(
    temporal_client, gateway, simulator, mode
) -> None:
    prompt = prompt_ending("length", 100)
    async with simulator_fault(simulator, fault="content_filter", count=1, after_tokens=20):
        workflow_id, status = await _run(
            temporal_client, gateway, prompt, 100, mode, use_cache=True
        )
    assert status["status"] == "completed", status
    assert status["finish_reason"] == "content_filter"
    assert "content filter" in status["notice"]
    assert await _text(gateway, workflow_id) == expected_answer(prompt, 20)
    if mode is GenerationMode.RESUME:
        await keep_history(temporal_client.get_workflow_handle(workflow_id), "content-filtered")
    # Not cached: the next identical request asks the provider again.
    again_id, again = await _run(temporal_client, gateway, prompt, 100, mode, use_cache=True)
    assert not again["cache_hit"] and again["finish_reason"] == "length"
    assert await _text(gateway, again_id) == expected_answer(prompt, 100)
    assert (await generations_for(simulator, prompt))["started"] == 2


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
async def test_transient_failure_mid_answer_generates_again_and_bills_both(
    temporal_client, gateway, simulator, mode
) -> None:
    prompt = prompt_ending("length", 80)
    before = (await gateway.get("/api/stats")).json()
    async with simulator_fault(
        simulator, fault="response_failed", count=1, after_tokens=15, code="server_error"
    ):
        workflow_id, status = await _run(temporal_client, gateway, prompt, 80, mode)
    after = (await gateway.get("/api/stats")).json()
    assert status["status"] == "completed", status
    assert await _text(gateway, workflow_id) == expected_answer(prompt, 80)
    assert (await generations_for(simulator, prompt))["started"] == 2
    # Two generations ran; both are billed, the answer's usage is the last one's.
    assert status["llm_calls"] == 2
    assert status["usage"]["completion_tokens"] == 80
    assert status["billed_usage"]["completion_tokens"] >= 80 + 1
    assert after["llm_calls"] - before["llm_calls"] == 2
    assert after["completion_tokens"] - before["completion_tokens"] >= 81
    events = await read_sse(gateway, workflow_id)
    assert [e["event"] for e in events].count("reset") == 1


async def test_final_failure_fails_at_once_with_the_providers_reason(
    temporal_client, gateway, simulator
) -> None:
    prompt = unique_prompt("Refused")
    async with simulator_fault(
        simulator, fault="response_failed", count=5, after_tokens=0, code="invalid_prompt"
    ):
        _, status = await _run(temporal_client, gateway, prompt, 60, GenerationMode.RESUME)
    assert status["status"] == "failed"
    assert status["error_type"] == "ProviderRejectedError"
    assert "invalid_prompt" in status["error"]
    assert status["retryable"] is False
    assert (await generations_for(simulator, prompt))["started"] == 1  # not retried


async def test_prompt_over_the_context_fails_once_with_a_clear_message(
    stack: LocalStack, temporal_client, gateway, tmp_path
) -> None:
    prompt = unique_prompt("word " * 1500)
    with (
        running_simulator(tmp_path / "sim.log", SIM_CONTEXT_WINDOW="1024") as small,
        own_worker(stack, {"SIMULATOR_URL": f"{small.url}/v1"}) as queue,
    ):
        for mode in MODES:
            handle = await start_chat_directly(
                temporal_client,
                ChatRequest(prompt=prompt, max_tokens=200, generation_mode=mode),
                task_queue=queue,
            )
            status = await wait_status(gateway, handle.id, {"failed"})
            assert status["error_type"] == "ProviderRejectedError", status
            assert "context" in status["error"].lower()
            # Asked once: the 400 is final, no retry storm.
            history = await handle.fetch_history()
            attempts = [
                e.activity_task_started_event_attributes.attempt
                for e in history.events
                if e.HasField("activity_task_started_event_attributes")
            ]
            assert set(attempts) == {1}, attempts  # no activity was tried twice


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
async def test_a_stalled_stream_is_given_up_after_the_idle_timeout(
    temporal_client, gateway, simulator, mode
) -> None:
    prompt = prompt_ending("length", 80)
    started = time.monotonic()
    async with simulator_fault(simulator, fault="stall", count=1, after_tokens=10, stall_s=60):
        workflow_id, status = await _run(temporal_client, gateway, prompt, 80, mode)
    assert status["status"] == "completed", status
    assert time.monotonic() - started < 30  # idle timeout 5 s, not the 60 s stall
    assert await _text(gateway, workflow_id) == expected_answer(prompt, 80)
    started_count = (await generations_for(simulator, prompt))["started"]
    # resume re-attaches to the same generation; restart must ask again.
    assert started_count == (1 if mode is GenerationMode.RESUME else 2)


async def test_a_generation_cancelled_at_the_provider_ends_the_chat_as_cancelled(
    temporal_client, gateway, simulator, db
) -> None:
    prompt = unique_prompt("Cancelled elsewhere")
    async with simulator_pace(simulator, 100):  # seconds of generation: time to cancel it
        handle = await start_chat_directly(
            temporal_client,
            ChatRequest(prompt=prompt, max_tokens=1000, generation_mode=GenerationMode.RESUME),
        )

        async def response_id() -> str | None:
            return await db.fetchval(
                "SELECT data->>'response_id' FROM chat_events WHERE workflow_id = $1 "
                "AND data ? 'response_id' LIMIT 1",
                handle.id,
            )

        generation = await wait_for(response_id, timeout_s=30)

        async def some_text_seen() -> bool:  # billed tokens exist only once some were sent
            return bool(
                await db.fetchval(
                    "SELECT count(*) FROM chat_events WHERE workflow_id = $1 AND type = 'delta'",
                    handle.id,
                )
            )

        await wait_for(some_text_seen, timeout_s=30)
        (await simulator.post(f"/v1/responses/{generation}/cancel")).raise_for_status()
        status = await wait_status(gateway, handle.id, {"cancelled"})
        assert "cancelled at the provider" in status["error"]
        assert status["llm_calls"] == 1 and status["billed_usage"]["completion_tokens"] > 0
        await keep_history(handle, "cancelled-at-provider")


async def test_an_error_event_mid_stream_re_attaches_to_the_same_generation(
    temporal_client, gateway, simulator
) -> None:
    prompt = prompt_ending("length", 80)
    async with simulator_fault(simulator, fault="error_event", count=1, after_tokens=15):
        workflow_id, status = await _run(
            temporal_client, gateway, prompt, 80, GenerationMode.RESUME
        )
    assert status["status"] == "completed", status
    assert await _text(gateway, workflow_id) == expected_answer(prompt, 80)
    assert await generations_for(simulator, prompt) == {"started": 1, "completed": 1}
    assert status["llm_calls"] == 1
    events = await read_sse(gateway, workflow_id)
    assert "reset" not in [e["event"] for e in events]  # the text continued


async def test_a_response_stuck_in_the_queue_fails_clearly(
    temporal_client, gateway, simulator
) -> None:
    prompt = unique_prompt("Queued forever")
    async with simulator_fault(simulator, fault="stuck_queued", count=1):
        _, status = await _run(temporal_client, gateway, prompt, 60, GenerationMode.RESUME)
    assert status["status"] == "failed"
    assert status["error_type"] == "ProviderQueueTimeoutError"
    assert "queued" in status["error"] and "cancelled" in status["error"]


async def test_an_outage_fails_after_the_tolerance_and_one_retry_answers(
    temporal_client: Client, gateway, simulator
) -> None:
    prompt = prompt_ending("length", 60, "Provider down")
    async with simulator_fault(simulator, fault="http_500", count=1000):
        workflow_id = await start_chat(gateway, prompt=prompt, max_tokens=60)
        events = await asyncio.wait_for(read_sse(gateway, workflow_id), timeout=60)
        status = await wait_status(gateway, workflow_id, {"failed"})
    assert status["error_type"] == "ProviderOutageError"
    assert "unavailable for" in status["error"] and "500" in status["error"]
    assert status["retryable"] is True
    assert events[-1]["event"] == "failed"
    # The cause is readable in the Temporal history, not "Failure exceeds size limit".
    history = await temporal_client.get_workflow_handle(workflow_id).fetch_history()
    failures = [
        e.activity_task_failed_event_attributes.failure.message
        for e in history.events
        if e.HasField("activity_task_failed_event_attributes")
    ]
    assert failures and all("500" in m and len(m) < 600 for m in failures), failures

    retried = await gateway.post(f"/api/workflows/{workflow_id}/retry")
    assert retried.status_code == 202, retried.text
    retry_id = retried.json()["workflow_id"]
    again = await gateway.post(f"/api/workflows/{workflow_id}/retry")
    assert again.json()["workflow_id"] == retry_id  # a double click starts one chat
    done = await wait_status(gateway, retry_id, {"completed"})
    assert done["retry_of"] == workflow_id
    assert await _text(gateway, retry_id) == expected_answer(prompt, 60)
    assert (await gateway.post(f"/api/workflows/{retry_id}/retry")).status_code == 409


async def test_an_unpriced_model_is_unpriced_not_free(fleet: LocalStack) -> None:
    """Every allowed model must be priced (a process refuses to start otherwise), so an
    unpriced call needs processes that disagree: a gateway that allows and prices the
    model, workers whose price table lacks it. The cost is then unknown, never 0."""
    process, url = fleet.start_extra_gateway(
        {
            "ALLOWED_MODELS": "simulator,my-local-model",
            "LLM_PRICES": '{"my-local-model": {"input": 1, "output": 1}}',
        }
    )
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30, headers=auth_headers()) as gateway:
            before = (await gateway.get("/api/stats")).json()
            workflow_id = await start_chat(
                gateway, prompt=unique_prompt(), max_tokens=40, model="my-local-model"
            )
            status = await wait_status(gateway, workflow_id, {"completed"})
            assert status["priced"] is False and status["cost_usd"] is None
            after = (await gateway.get("/api/stats")).json()
        assert after["unpriced_llm_calls"] == before["unpriced_llm_calls"] + 1
    finally:
        process.stop()


async def test_a_model_outside_the_allowlist_is_a_422_listing_the_allowed(gateway) -> None:
    refused = await gateway.post("/api/workflows/start", json={"prompt": "hi", "model": "gpt-4o"})
    assert refused.status_code == 422
    assert "allowed: simulator, other-model" in refused.json()["detail"]


def test_an_allowed_model_without_a_price_stops_the_start(fleet: LocalStack) -> None:
    """The gateway and a worker refuse to start, saying which model lacks a price."""
    env = {**fleet.env(), "ALLOWED_MODELS": "simulator,nowhere-priced", "GATEWAY_PORT": "1"}
    for module in ("api", "worker"):
        ran = subprocess.run(
            [sys.executable, "-m", module],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ran.returncode == 2, (module, ran.stdout[-2000:], ran.stderr[-2000:])
        assert "without a price: nowhere-priced" in ran.stdout + ran.stderr


async def test_auto_mode_probes_the_endpoint(stack: LocalStack, tmp_path) -> None:
    """A worker in auto mode uses resume where background responses work and restart
    where they do not (like llama.cpp); forcing resume there refuses to start."""

    def decided(worker) -> str:
        return next(
            line for line in worker.log_tail(400).splitlines() if "generation mode decided" in line
        )

    queue = f"probe-{time.monotonic_ns()}"  # its own queue: no chat of the suite lands here
    resumable = stack.start_worker({"TASK_QUEUE": queue})
    try:
        assert '"mode": "resume"' in decided(resumable)
    finally:
        resumable.stop()
    with running_simulator(tmp_path / "sim.log", SIM_BACKGROUND_SUPPORTED="false") as plain:
        env = {"TASK_QUEUE": queue, "SIMULATOR_URL": f"{plain.url}/v1"}
        fallback = stack.start_worker(env)
        try:
            line = decided(fallback)
            assert '"mode": "restart"' in line and "background" in line, line
        finally:
            fallback.stop()
        forced = ManagedProcess(
            "worker-forced-resume",
            [sys.executable, "worker.py"],
            {**stack.env(), **env, "GENERATION_MODE": "resume"},
            tmp_path / "forced.log",
        ).start()
        try:
            await wait_for(lambda: _exited(forced), timeout_s=60)
            assert forced.popen is not None and forced.popen.returncode == 2
            assert "cannot resume a generation" in forced.log_tail(100)
        finally:
            forced.stop()


async def _exited(process) -> bool:
    return not process.alive()
