"""Provider errors, armed in the simulator at run time (`POST /sim/faults`):

- 429 is retried after the provider's Retry-After, not the backoff's 1 s;
- 5xx is retried with growing backoff (for how long: LLM_OUTAGE_TOLERANCE_S, see
  test_provider_ends.py);
- a cut connection is retried (restart mode: a new generation per attempt; resume
  mode re-attaches instead, see test_generation_resume.py).

The gap between two attempts is read from the simulator's request log (`received_at`
of each request carrying the chat's prompt).
"""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any

import httpx
from temporalio.client import Client

from common.models import ChatRequest, GenerationMode
from testing.chats import (
    generations_for,
    read_all_chunks,
    start_chat,
    start_chat_directly,
    wait_status,
)
from testing.oracle import expected_answer, unique_prompt
from testing.simulator import simulator_fault


async def _requests_for(simulator: httpx.AsyncClient, prompt: str) -> list[dict[str, Any]]:
    """The simulator's recorded generation requests carrying `prompt`, oldest first."""
    entries = (await simulator.get("/sim/requests", params={"limit": 200})).json()
    return [e for e in entries if e["messages"] and e["messages"][-1]["content"] == prompt]


def _gaps_s(entries: list[dict[str, Any]]) -> list[float]:
    times = [datetime.fromisoformat(e["received_at"]) for e in entries]
    return [(b - a).total_seconds() for a, b in itertools.pairwise(times)]


async def _completes_despite(
    gateway: httpx.AsyncClient, simulator: httpx.AsyncClient, prompt: str, **fault: object
) -> tuple[str, list[dict[str, Any]]]:
    """Run a chat of 60 tokens through the gateway while the simulator injects `fault`;
    check that it completed; return its workflow id and the generation requests made."""
    async with simulator_fault(simulator, **fault):
        workflow_id = await start_chat(gateway, prompt=prompt, max_tokens=60)
        status = await wait_status(gateway, workflow_id, {"completed", "failed"}, timeout_s=60)
    assert status["status"] == "completed", status
    return workflow_id, await _requests_for(simulator, prompt)


async def test_429_waits_for_retry_after(gateway, simulator) -> None:
    prompt = unique_prompt("Rate limited")
    workflow_id, attempts = await _completes_despite(
        gateway, simulator, prompt, fault="http_429", count=1, retry_after_s=3
    )
    assert len(attempts) == 2
    # Retry-After: 3 s, where the backoff alone would have waited 1 s.
    assert _gaps_s(attempts)[0] >= 2.9, _gaps_s(attempts)
    # The 429 started nothing at the provider: one generation, paid once.
    assert await generations_for(simulator, prompt) == {"started": 1, "completed": 1}
    chunks = await read_all_chunks(gateway, workflow_id)
    assert "".join(c["text"] for c in chunks) == expected_answer(prompt, 60)


async def test_5xx_is_retried_with_backoff(gateway, simulator) -> None:
    prompt = unique_prompt("Flaky provider")
    _, attempts = await _completes_despite(gateway, simulator, prompt, fault="http_500", count=2)
    assert len(attempts) == 3
    first, second = _gaps_s(attempts)
    assert first >= 0.9 and second >= 1.9 and second > first  # 1 s, then 2 s
    assert await generations_for(simulator, prompt) == {"started": 1, "completed": 1}


async def test_cut_connection_is_retried_in_restart_mode(
    temporal_client: Client, gateway, simulator
) -> None:
    prompt = unique_prompt("Cut twice")
    async with simulator_fault(simulator, fault="disconnect", count=2, after_tokens=20):
        handle = await start_chat_directly(
            temporal_client,
            ChatRequest(prompt=prompt, max_tokens=120, generation_mode=GenerationMode.RESTART),
        )
        await handle.result(rpc_timeout=None)
    attempts = await _requests_for(simulator, prompt)
    assert len(attempts) == 3
    first, second = _gaps_s(attempts)
    assert first >= 0.9 and second >= 1.9  # backoff between the attempts
    # Restart mode cannot resume: each cut costs a generation, the last one completes.
    assert await generations_for(simulator, prompt) == {"started": 3, "completed": 1}
    chunks = await read_all_chunks(gateway, handle.id)
    assert "".join(c["text"] for c in chunks) == expected_answer(prompt, 120)
