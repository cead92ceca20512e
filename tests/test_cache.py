"""Answer cache and cost accounting: identical requests cost nothing and come back at once."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from temporalio.client import Client, WorkflowFailureError

from common.models import ChatRequest
from testing.chats import (
    generations_for,
    read_all_chunks,
    start_chat,
    start_chat_directly,
    wait_for,
    wait_status,
)
from testing.oracle import expected_answer, prompt_ending, unique_prompt
from testing.sse import checkpointed_text, read_sse


async def _chat(gateway: httpx.AsyncClient, **body: object) -> dict:
    return await wait_status(gateway, await start_chat(gateway, **body), {"completed", "failed"})


async def _direct(temporal: Client, request: ChatRequest):
    return await start_chat_directly(temporal, request)


async def test_hit_after_a_completed_miss(gateway, simulator) -> None:
    prompt = unique_prompt()
    miss = await _chat(gateway, prompt=prompt, max_tokens=150)
    hit = await _chat(gateway, prompt=prompt, max_tokens=150)

    assert miss["cache_hit"] is False and miss["cost_usd"] > 0
    assert hit["cache_hit"] is True and hit["cached_from"] == miss["workflow_id"]
    assert hit["saved_usd"] == pytest.approx(miss["cost_usd"])
    assert hit["saved_ms"] > 0 and hit["cost_usd"] in (None, 0)
    assert await generations_for(simulator, prompt) == {"started": 1, "completed": 1}
    answer = expected_answer(prompt, 150)
    for status in (miss, hit):
        chunks = await read_all_chunks(gateway, status["workflow_id"])
        assert "".join(c["text"] for c in chunks) == answer
    # The hit's event stream tells the same story: no deltas, the chunks, completed.
    events = await read_sse(gateway, hit["workflow_id"])
    assert not [e for e in events if e["event"] == "delta"]
    assert checkpointed_text(events) == answer
    assert events[-1]["event"] == "completed"


@pytest.mark.parametrize(
    "change", [{"temperature": 0.2}, {"max_tokens": 151}, {"model": "other-model"}]
)
async def test_a_parameter_change_misses(gateway, simulator, change) -> None:
    prompt = unique_prompt()
    await _chat(gateway, prompt=prompt, max_tokens=150)
    other = await _chat(gateway, prompt=prompt, **{"max_tokens": 150, **change})
    assert other["cache_hit"] is False
    assert (await generations_for(simulator, prompt))["started"] == 2


async def test_a_context_change_misses(gateway, simulator) -> None:
    first_a = unique_prompt("first turn A")
    first_b = unique_prompt("first turn B")
    question = unique_prompt("and then?")
    await _chat(gateway, prompt=first_a, max_tokens=40, conversation_id="conv-a-" + first_a[-9:-1])
    await _chat(gateway, prompt=first_b, max_tokens=40, conversation_id="conv-b-" + first_b[-9:-1])
    in_a = await _chat(
        gateway, prompt=question, max_tokens=60, conversation_id="conv-a-" + first_a[-9:-1]
    )
    in_b = await _chat(
        gateway, prompt=question, max_tokens=60, conversation_id="conv-b-" + first_b[-9:-1]
    )
    assert in_a["cache_hit"] is False and in_b["cache_hit"] is False
    assert (await generations_for(simulator, question))["started"] == 2


async def test_cache_false_always_generates(gateway, simulator) -> None:
    prompt = unique_prompt()
    await _chat(gateway, prompt=prompt, max_tokens=60)
    again = await _chat(gateway, prompt=prompt, max_tokens=60, cache=False)
    assert again["cache_hit"] is False
    assert (await generations_for(simulator, prompt))["started"] == 2


async def test_entries_expire_after_their_ttl(temporal_client, simulator, db) -> None:
    prompt = unique_prompt()
    request = ChatRequest(prompt=prompt, max_tokens=60, use_cache=True, cache_ttl_s=1)
    handle = await _direct(temporal_client, request)
    first = await handle.result()
    assert first.cache_hit is False

    async def expired() -> bool:  # by PostgreSQL's clock, the one the cache reads
        return bool(
            await db.fetchval(
                "SELECT a.expires_at < now() FROM answer_cache a JOIN generations g "
                "ON g.cache_key = a.cache_key WHERE g.workflow_id = $1",
                handle.id,
            )
        )

    await wait_for(expired, timeout_s=10)
    second = await (await _direct(temporal_client, request)).result()
    assert second.cache_hit is False
    assert (await generations_for(simulator, prompt))["started"] == 2


async def test_failed_generations_are_not_cached(temporal_client, db) -> None:
    # The simulator refuses max_tokens above its limit (400): a non-retryable failure.
    request = ChatRequest(prompt=unique_prompt(), max_tokens=9000, use_cache=True)
    for _ in range(2):
        handle = await _direct(temporal_client, request)
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    key = await db.fetchval("SELECT cache_key FROM generations WHERE workflow_id = $1", handle.id)
    assert key is not None
    assert await db.fetchval("SELECT count(*) FROM answer_cache WHERE cache_key = $1", key) == 0


async def test_identical_requests_arriving_together_make_one_llm_call(gateway, simulator) -> None:
    prompt = unique_prompt()
    started = await asyncio.gather(
        *(
            gateway.post("/api/workflows/start", json={"prompt": prompt, "max_tokens": 200})
            for _ in range(3)
        )
    )
    ids = [r.json()["workflow_id"] for r in started]
    statuses = [await wait_status(gateway, i, {"completed"}) for i in ids]
    assert sorted(s["cache_hit"] for s in statuses) == [False, True, True]
    assert await generations_for(simulator, prompt) == {"started": 1, "completed": 1}
    answer = expected_answer(prompt, 200)
    for workflow_id in ids:
        chunks = await read_all_chunks(gateway, workflow_id)
        assert "".join(c["text"] for c in chunks) == answer


async def test_stats_add_up(gateway) -> None:
    before = (await gateway.get("/api/stats")).json()
    prompt = prompt_ending("length", 100)
    miss = await _chat(gateway, prompt=prompt, max_tokens=100)
    hit = await _chat(gateway, prompt=prompt, max_tokens=100)
    after = (await gateway.get("/api/stats")).json()
    assert after["generations"] - before["generations"] == 2
    assert after["llm_calls"] - before["llm_calls"] == 1
    assert after["cache_hits"] - before["cache_hits"] == 1
    assert after["completion_tokens"] - before["completion_tokens"] == 100
    assert after["cost_usd"] - before["cost_usd"] == pytest.approx(miss["cost_usd"])
    assert after["saved_usd"] - before["saved_usd"] == pytest.approx(hit["saved_usd"])
    assert after["saved_ms"] - before["saved_ms"] == hit["saved_ms"]
