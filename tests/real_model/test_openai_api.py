"""/v1 in front of a real model (llama-server with Gemma 3 270M), through the official
openai Python SDK: llama.cpp has no background mode, durable-chat gives it one."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from temporalio.client import Client

from api.v1.objects import workflow_id_of
from devstack import local_llm
from testing.keys import TEST_API_KEYS
from testing.oracle import unique_prompt
from testing.stack import LocalStack
from tests.real_model.support import generated_answer

pytestmark = pytest.mark.real_model


async def test_background_response_from_llama_cpp_resumes_with_starting_after(
    llm_fleet: LocalStack, llm_temporal: Client
) -> None:
    max_tokens = 48
    async with openai.AsyncOpenAI(
        base_url=f"{llm_fleet.gateway_url}/v1", api_key=TEST_API_KEYS["tester"], max_retries=0
    ) as client:
        models = await client.models.list()
        assert [m.id for m in models.data] == [local_llm.MODEL_ALIAS]
        stream = await client.responses.create(
            model=local_llm.MODEL_ALIAS,
            input=unique_prompt("What is durable execution?"),
            max_output_tokens=max_tokens,
            background=True,
            stream=True,
        )
        first: list[Any] = []
        async for event in stream:
            first.append(event)
            if len(first) == 2:  # created, queued: drop the stream
                break
        await stream.close()
        response_id = first[0].response.id
        rest = [
            e
            async for e in await client.responses.retrieve(
                response_id, stream=True, starting_after=first[-1].sequence_number
            )
        ]
        final = await client.responses.retrieve(response_id)
    events = first + rest
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].type in ("response.completed", "response.incomplete")
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    answer = await generated_answer(llm_temporal, workflow_id_of(response_id))
    assert text == answer["text"] == final.output_text
    assert text.strip(), "the model wrote nothing"
    assert final.usage is not None and 0 < final.usage.output_tokens <= max_tokens
