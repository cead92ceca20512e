"""Failures in the middle of a real model's answer: the worker generating it is killed,
llama-server itself is stopped and started again.

llama.cpp cannot resume a generation (restart mode): the retry asks the model again,
viewers get one `reset`, and the chat's answer is the retry's, checkpointed whole.
"""

from __future__ import annotations

import asyncio
import os
import signal

import asyncpg
import httpx
import pytest
from temporalio.client import Client

from testing.chats import read_all_chunks, start_chat, wait_status
from testing.oracle import unique_prompt
from testing.sse import checkpointed_text, preview_text, read_sse
from testing.stack import LocalStack
from testing.workers import worker_process
from tests.real_model.support import (
    IDLE_TIMEOUT_S,
    generated_answer,
    generating_worker,
    llama_requests,
    llm_calls,
    stats,
)

pytestmark = pytest.mark.real_model

# About 6 s at ~40 tokens/s on 2 idle cores (a minute when a test suite runs beside):
# long enough to fail mid-answer; the answers of this base model run to max_tokens.
MAX_TOKENS = 250


async def test_kill_9_of_the_generating_worker_restarts_the_answer_once(
    llm_fleet: LocalStack,
    llm_gateway: httpx.AsyncClient,
    llm_temporal: Client,
    llm_db: asyncpg.Pool,
) -> None:
    before = await stats(llm_gateway)
    requests_before = llama_requests(llm_fleet)
    workflow_id = await start_chat(
        llm_gateway, prompt=unique_prompt("Tell me a long story"), max_tokens=MAX_TOKENS
    )
    identity = await generating_worker(llm_temporal, llm_db, workflow_id)
    victim = worker_process(llm_fleet, identity)
    assert victim is not None, identity
    victim.kill()  # SIGKILL mid-answer: its stream to llama-server dies with it

    status = await wait_status(llm_gateway, workflow_id, {"completed", "failed"}, timeout_s=240)
    assert status["status"] == "completed", status
    answer = await generated_answer(llm_temporal, workflow_id)
    chunks = await read_all_chunks(llm_gateway, workflow_id)
    assert "".join(c["text"] for c in chunks) == answer["text"]
    assert all(c["worker"] != identity for c in chunks)

    events = await read_sse(llm_gateway, workflow_id)
    assert [e["event"] for e in events].count("reset") == 1
    assert preview_text(events) == answer["text"]  # after the reset: the retry's text
    assert checkpointed_text(events) == answer["text"]

    assert llama_requests(llm_fleet) - requests_before == 2  # the killed one, the retry
    after = await stats(llm_gateway)
    assert llm_calls(status, before, after) >= 2, (status, before, after)


async def test_llama_server_stopped_mid_answer_and_started_again(
    llm_fleet: LocalStack,
    llm_gateway: httpx.AsyncClient,
    llm_temporal: Client,
    llm_db: asyncpg.Pool,
) -> None:
    workflow_id = await start_chat(
        llm_gateway, prompt=unique_prompt("Tell me another long story"), max_tokens=MAX_TOKENS
    )
    await generating_worker(llm_temporal, llm_db, workflow_id)
    old_server = llm_fleet.llama
    assert old_server is not None
    # SIGTERM: llama-server stops listening at once but keeps the open stream, sending
    # nothing, for about 30 s before it exits. The worker has to notice the silence.
    stopped_at = await llm_db.fetchval("SELECT clock_timestamp()")
    os.kill(old_server.pid, signal.SIGTERM)
    await asyncio.sleep(3)
    await asyncio.to_thread(llm_fleet.start_llama)

    status = await wait_status(llm_gateway, workflow_id, {"completed", "failed"}, timeout_s=240)
    assert status["status"] == "completed", status
    answer = await generated_answer(llm_temporal, workflow_id)
    chunks = await read_all_chunks(llm_gateway, workflow_id)
    assert "".join(c["text"] for c in chunks) == answer["text"]
    # The whole answer, not the part streamed before the stop taken for all of it.
    assert answer["finish_reason"] in ("length", "stop"), answer
    assert answer["usage"]["completion_tokens"] == MAX_TOKENS
    events = await read_sse(llm_gateway, workflow_id)
    assert [e["event"] for e in events].count("reset") >= 1
    assert preview_text(events) == answer["text"]
    # The silent stream was given up after the idle timeout (and the retry's backoff),
    # not when the old server finally closed it (~30 s) or at the request timeout (120 s).
    reset_at = await llm_db.fetchval(
        "SELECT min(created_at) FROM chat_events WHERE workflow_id = $1 AND type = 'reset'",
        workflow_id,
    )
    noticed_s = (reset_at - stopped_at).total_seconds()
    assert noticed_s < IDLE_TIMEOUT_S + 12, f"the retry started {noticed_s:.0f} s after the stop"
