"""Never pay twice: a worker killed during the LLM call resumes the same generation."""

from __future__ import annotations

import asyncio
import os
import signal

from temporalio.client import Client

from common.models import ChatRequest, GenerationMode
from testing.chats import generations_for, start_chat_directly, wait_for, wait_status
from testing.oracle import expected_answer, prompt_ending, unique_prompt
from testing.simulator import simulator_fault, simulator_pace
from testing.sse import preview_text, read_sse
from testing.stack import LocalStack
from testing.workers import worker_process


async def _generating_worker(handle) -> str | None:  # type: ignore[no-untyped-def]
    """Identity of the worker running generate_full_text right now, if any."""
    description = await handle.describe()
    for pending in description.raw_description.pending_activities:
        if pending.activity_type.name == "generate_full_text" and pending.last_worker_identity:
            if pending.state == 2:  # PENDING_ACTIVITY_STATE_STARTED
                return str(pending.last_worker_identity)
    return None


async def _start(temporal: Client, prompt: str, max_tokens: int, mode: GenerationMode):
    request = ChatRequest(prompt=prompt, max_tokens=max_tokens, generation_mode=mode)
    return await start_chat_directly(temporal, request)


async def test_kill_9_during_generation_twice_pays_once_and_text_never_restarts(
    fleet: LocalStack, temporal_client: Client, gateway, simulator
) -> None:
    max_tokens = 800
    prompt = prompt_ending("length", max_tokens, "A very long answer")
    async with simulator_pace(simulator, 100):  # 8 s of generation: time for two kills
        handle = await _start(temporal_client, prompt, max_tokens, GenerationMode.RESUME)
        events_task = asyncio.create_task(read_sse(gateway, handle.id))

        killed: list[str] = []
        for _ in range(2):

            async def running_elsewhere() -> str | None:
                identity = await _generating_worker(handle)
                return identity if identity and identity not in killed else None

            identity = await wait_for(running_elsewhere, timeout_s=30, interval_s=0.05)
            await asyncio.sleep(0.8)  # let it stream a while
            victim = worker_process(fleet, identity)
            assert victim is not None, identity
            victim.kill()
            killed.append(identity)
            fleet.start_worker()  # keep two workers: the harness plays the supervisor

        result = await handle.result(rpc_timeout=None)
        events = await asyncio.wait_for(events_task, timeout=30)
        answer = expected_answer(prompt, max_tokens)

        assert await generations_for(simulator, prompt) == {"started": 1, "completed": 1}
        assert result.total_chunks > 0
        assert not [e for e in events if e["event"] == "reset"]
        assert preview_text(events) == answer  # offsets checked: nothing twice, no gap
        chunks = {e["data"]["index"]: e["data"]["text"] for e in events if e["event"] == "chunk"}
        assert "".join(chunks[i] for i in range(len(chunks))) == answer
        status = await wait_status(gateway, handle.id, {"completed"})
        assert status["generation_mode"] == "resume"


async def _run_with_one_cut(  # type: ignore[no-untyped-def]
    temporal: Client, gateway, simulator, prompt: str, max_tokens: int, mode: GenerationMode
):
    """Run a chat whose LLM connection is cut once, after 40 tokens; return its handle
    and every event of its stream."""
    async with simulator_fault(simulator, fault="disconnect", count=1, after_tokens=40):
        handle = await _start(temporal, prompt, max_tokens, mode)
        events = await read_sse(gateway, handle.id)
        armed = (await simulator.get("/sim/faults")).json()
    assert armed["remaining"] == 0, armed  # the connection was cut
    return handle, events


async def test_cut_connection_reattaches_without_a_new_generation(
    temporal_client: Client, gateway, simulator
) -> None:
    prompt = unique_prompt()
    _, events = await _run_with_one_cut(
        temporal_client, gateway, simulator, prompt, 300, GenerationMode.RESUME
    )
    assert not [e for e in events if e["event"] == "reset"]
    assert preview_text(events) == expected_answer(prompt, 300)
    assert await generations_for(simulator, prompt) == {"started": 1, "completed": 1}


async def test_restart_mode_falls_back_to_a_new_generation_with_a_visible_reset(
    temporal_client: Client, gateway, simulator
) -> None:
    prompt = unique_prompt()
    handle, events = await _run_with_one_cut(
        temporal_client, gateway, simulator, prompt, 200, GenerationMode.RESTART
    )
    answer = expected_answer(prompt, 200)
    resets = [e for e in events if e["event"] == "reset"]
    assert len(resets) == 1 and "restarted" in resets[0]["data"]["reason"]
    before = preview_text(events[: events.index(resets[0])])
    assert 0 < len(before) < len(answer) and answer.startswith(before)
    assert preview_text(events) == answer
    assert await generations_for(simulator, prompt) == {"started": 2, "completed": 1}
    status = await wait_status(gateway, handle.id, {"completed"})
    assert status["generation_mode"] == "restart"


async def test_cancelling_the_chat_cancels_the_generation_at_the_provider(
    temporal_client: Client, gateway, simulator
) -> None:
    # An answer that runs to its 1000 tokens (a natural one may have 48: over in a
    # second), at 100 tokens/s: ten seconds for the cancellation to reach the provider.
    prompt = prompt_ending("length", 1000, "Tell me about durable execution")
    async with simulator_pace(simulator, 100):
        handle = await _start(temporal_client, prompt, 1000, GenerationMode.RESUME)

        async def first_delta():  # type: ignore[no-untyped-def]
            events = await read_sse(gateway, handle.id, stop_after=4)
            return next((e for e in events if e["event"] == "delta"), None)

        delta = await wait_for(first_delta, timeout_s=30)
        response_id = delta["data"]["response_id"]
        await gateway.post(f"/api/workflows/{handle.id}/cancel")
        await wait_status(gateway, handle.id, {"stopped"})  # it had shown text: kept

        async def cancelled_at_provider() -> bool:
            body = (await simulator.get(f"/v1/responses/{response_id}")).json()
            return body["status"] == "cancelled"

        assert await wait_for(cancelled_at_provider, timeout_s=10)
        assert (await generations_for(simulator, prompt))["completed"] == 0


async def test_a_frozen_worker_does_not_cancel_the_generation_its_successor_resumes(
    fleet: LocalStack, temporal_client: Client, gateway, simulator
) -> None:
    """A worker that stops answering (SIGSTOP: a long GC pause, a stalled VM) misses
    the generation's heartbeats; another attempt re-attaches to the same background
    response. When the frozen worker wakes, the server tells its attempt it timed out:
    it must leave the response running, not cancel it under its successor."""
    max_tokens = 600
    prompt = prompt_ending("length", max_tokens, "A long answer across a frozen worker")
    async with simulator_pace(simulator, 60):  # 10 s of generation
        handle = await _start(temporal_client, prompt, max_tokens, GenerationMode.RESUME)
        identity = await wait_for(lambda: _generating_worker(handle), timeout_s=30)
        frozen = worker_process(fleet, identity)
        assert frozen is not None, identity
        await asyncio.sleep(0.5)  # streaming
        os.kill(frozen.pid, signal.SIGSTOP)
        try:
            # past the 3 s heartbeat timeout the next attempt starts, but the server may
            # hand it (and the next ones) to a poll the frozen worker left open, where it
            # times out again: one attempt per open poll, up to about 80 s in all
            attempts: list[tuple[int, int, str]] = []  # (attempt, state, worker), as seen

            async def resumed_elsewhere() -> bool:
                description = await handle.describe()
                for pending in description.raw_description.pending_activities:
                    if pending.activity_type.name == "generate_full_text":
                        seen = (pending.attempt, pending.state, pending.last_worker_identity)
                        if not attempts or attempts[-1] != seen:
                            attempts.append(seen)
                current = await _generating_worker(handle)
                return current is not None and current != identity

            try:
                await wait_for(resumed_elsewhere, timeout_s=100, interval_s=0.1)
            except TimeoutError:
                raise AssertionError(f"frozen {identity}; attempts seen: {attempts}") from None
            await asyncio.sleep(0.5)
        finally:
            os.kill(frozen.pid, signal.SIGCONT)  # it wakes and learns its attempt timed out
        status = await wait_status(
            gateway, handle.id, {"completed", "cancelled", "failed"}, timeout_s=60
        )
    assert status["status"] == "completed", status
    assert await generations_for(simulator, prompt) == {"started": 1, "completed": 1}
