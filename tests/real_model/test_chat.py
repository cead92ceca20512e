"""A chat against the real model: the whole flow, and a prompt over the model's context."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from temporalio.client import Client

from devstack import local_llm
from testing.chats import read_all_chunks, start_chat, wait_status
from testing.oracle import unique_prompt
from testing.sse import checkpointed_text, preview_text, read_sse
from testing.stack import LocalStack
from tests.real_model.support import (
    CONTEXT_EXCEEDED,
    generated_answer,
    llama_log,
    llama_requests,
)

pytestmark = pytest.mark.real_model


async def test_chat_completes_with_the_real_model(
    llm_gateway: httpx.AsyncClient, llm_temporal: Client
) -> None:
    max_tokens = 64
    workflow_id = await start_chat(
        llm_gateway, prompt=unique_prompt("What is durable execution?"), max_tokens=max_tokens
    )
    status = await wait_status(llm_gateway, workflow_id, {"completed", "failed"}, timeout_s=120)
    assert status["status"] == "completed", status

    answer = await generated_answer(llm_temporal, workflow_id)
    chunks = await read_all_chunks(llm_gateway, workflow_id)
    assert answer["text"].strip(), "the model wrote nothing"
    assert "".join(c["text"] for c in chunks) == answer["text"]
    events = await read_sse(llm_gateway, workflow_id)
    assert preview_text(events) == answer["text"]  # the live text was the answer
    assert checkpointed_text(events) == answer["text"]
    assert events[-1]["event"] == "completed"

    assert status["model"] == local_llm.MODEL_ALIAS
    usage = status["usage"]
    assert usage["prompt_tokens"] > 0
    assert 0 < usage["completion_tokens"] <= max_tokens
    assert status["cost_usd"] == 0  # a local model costs nothing
    # Nobody set GENERATION_MODE: the workers' probe found llama.cpp cannot resume.
    assert status["generation_mode"] == "restart"


async def test_prompt_over_the_context_fails_clearly_after_one_request(
    llm_stack: LocalStack, llm_gateway: httpx.AsyncClient
) -> None:
    # "word123" is about 4.5 tokens: some 5,400 tokens, over CONTEXT_TOKENS (4096), in
    # about 10,000 characters, under the gateway's MAX_PROMPT_CHARS (32,000).
    words = " ".join(f"word{i}" for i in range(1200))
    prompt = unique_prompt(f"Summarise: {words}")
    assert len(prompt) < 32_000
    requests_before = llama_requests(llm_stack)
    rejected_before = llama_log(llm_stack).count(CONTEXT_EXCEEDED)

    workflow_id = await start_chat(llm_gateway, prompt=prompt, max_tokens=32)
    status = await wait_status(llm_gateway, workflow_id, {"completed", "failed"}, timeout_s=60)

    assert status["status"] == "failed", status
    error = (status["error"] or "").lower()
    assert "context" in error or "too long" in error, status["error"]
    events = await read_sse(llm_gateway, workflow_id)
    assert events[-1]["event"] == "failed"
    await asyncio.sleep(3)  # a retry would come after at least 1 s
    assert llama_requests(llm_stack) - requests_before == 1, "the prompt was sent again"
    assert llama_log(llm_stack).count(CONTEXT_EXCEEDED) - rejected_before == 1
