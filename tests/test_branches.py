"""Regenerate, edit and resend, continue (issue 18) through the gateway's API, on the
real stack: every operation is a new chat (a workflow of its own, in the Temporal UI
with the conversation's search attribute), and nothing of an older branch is lost."""

from __future__ import annotations

import uuid

from temporalio.client import Client

from common import search_attributes
from common.models import ChatRequest
from testing.chats import generations_for, start_chat, wait_status
from testing.oracle import expected_answer, prompt_ending, unique_prompt
from testing.simulator import simulator_variant


async def _request_of(temporal: Client, workflow_id: str) -> ChatRequest:
    history = await temporal.get_workflow_handle(workflow_id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    (request,) = await temporal.data_converter.decode(started.input.payloads, [ChatRequest])
    assert isinstance(request, ChatRequest)
    return request


async def _turn(gateway, conversation: str, prompt: str, **body: object) -> str:  # type: ignore[no-untyped-def]
    workflow_id = await start_chat(gateway, prompt=prompt, conversation_id=conversation, **body)
    await wait_status(gateway, workflow_id, {"completed"}, timeout_s=60)
    return workflow_id


async def _conversation(gateway, conversation: str) -> dict:  # type: ignore[no-untyped-def, type-arg]
    response = await gateway.get(f"/api/conversations/{conversation}")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_regenerate_makes_a_version_and_the_old_one_can_be_chosen_again(
    gateway, simulator, temporal_client: Client
) -> None:
    conversation = f"conv-{uuid.uuid4().hex[:12]}"
    prompt = unique_prompt()
    first = await _turn(gateway, conversation, prompt, max_tokens=40)

    async with simulator_variant(simulator, "alternate"):
        response = await gateway.post(f"/api/workflows/{first}/regenerate")
        assert response.status_code == 202, response.text
        second = response.json()["workflow_id"]
        status = await wait_status(gateway, second, {"completed"}, timeout_s=60)
    assert status["cache_hit"] is False  # asked again, not the cached answer
    assert (await generations_for(simulator, prompt))["started"] == 2

    view = await _conversation(gateway, conversation)
    assert view["head_id"] == second
    (turn,) = view["turns"]
    assert turn["workflow_id"] == second and turn["versions"] == [first, second]
    answers = {}
    for chat in (first, second):
        chunks = (await gateway.get(f"/api/workflows/{chat}/chunks")).json()["chunks"]
        answers[chat] = "".join(c["text"] for c in chunks)
    assert answers[first] != answers[second]
    assert turn["answer"] == answers[second]

    chosen = await gateway.put(
        f"/api/conversations/{conversation}/head", json={"workflow_id": first}
    )
    assert chosen.status_code == 200, chosen.text
    assert chosen.json()["turns"][0]["answer"] == answers[first]
    # the next turn follows the version chosen
    follow_up = await _turn(gateway, conversation, "And then?", max_tokens=20)
    request = await _request_of(temporal_client, follow_up)
    assert [t.content for t in request.history] == [prompt, answers[first]]
    assert request.parent_id == first

    # both versions are chats of the same conversation in Temporal
    for chat in (first, second):
        description = await temporal_client.get_workflow_handle(chat).describe()
        assert description.typed_search_attributes.get(search_attributes.CONVERSATION) == (
            conversation
        )
    assert (await _request_of(temporal_client, second)).variant_of == first


async def test_edit_and_resend_branches_and_keeps_the_old_branch(
    gateway, temporal_client: Client
) -> None:
    conversation = f"conv-{uuid.uuid4().hex[:12]}"
    one = await _turn(gateway, conversation, unique_prompt(), max_tokens=20)
    two = await _turn(gateway, conversation, unique_prompt(), max_tokens=20)
    three = await _turn(gateway, conversation, unique_prompt(), max_tokens=20)

    edited_prompt = unique_prompt()
    response = await gateway.post(f"/api/workflows/{two}/edit", json={"prompt": edited_prompt})
    assert response.status_code == 202, response.text
    edited = response.json()["workflow_id"]
    await wait_status(gateway, edited, {"completed"}, timeout_s=60)

    request = await _request_of(temporal_client, edited)
    assert request.prompt == edited_prompt and request.parent_id == one
    assert len(request.history) == 2  # turn one only: the old branch is not its context

    view = await _conversation(gateway, conversation)
    assert [t["workflow_id"] for t in view["turns"]] == [one, edited]
    assert view["turns"][1]["versions"] == [two, edited]

    # the old branch, its later turn included, is still there
    back = await gateway.put(f"/api/conversations/{conversation}/head", json={"workflow_id": two})
    assert [t["workflow_id"] for t in back.json()["turns"]] == [one, two, three]
    assert back.json()["head_id"] == three


async def test_continue_carries_a_cut_answer_on_as_one_answer(
    gateway, temporal_client: Client
) -> None:
    conversation = f"conv-{uuid.uuid4().hex[:12]}"
    max_tokens = 30
    prompt = prompt_ending("length", max_tokens, "An answer cut at its limit")
    cut = await _turn(gateway, conversation, prompt, max_tokens=max_tokens)
    assert (await gateway.get(f"/api/workflows/{cut}/status")).json()["finish_reason"] == "length"
    view = await _conversation(gateway, conversation)
    assert view["turns"][0]["continuable"] is True

    response = await gateway.post(f"/api/workflows/{cut}/continue")
    assert response.status_code == 202, response.text
    more = response.json()["workflow_id"]
    await wait_status(gateway, more, {"completed"}, timeout_s=60)

    request = await _request_of(temporal_client, more)
    assert request.continues == cut and request.parent_id == cut
    assert [(t.role, t.content) for t in request.history] == [
        ("user", prompt),
        ("assistant", expected_answer(prompt, max_tokens)),
    ]
    view = await _conversation(gateway, conversation)
    (turn,) = view["turns"]
    assert turn["workflow_id"] == cut and turn["continued_by"] == [more]
    chunks = (await gateway.get(f"/api/workflows/{more}/chunks")).json()["chunks"]
    assert turn["answer"] == expected_answer(prompt, max_tokens) + "".join(
        c["text"] for c in chunks
    )

    # the next turn gets the two parts as one answer
    after = await _turn(gateway, conversation, "Thanks.", max_tokens=10)
    history = (await _request_of(temporal_client, after)).history
    assert [(t.role, t.content) for t in history] == [
        ("user", prompt),
        ("assistant", turn["answer"]),
    ]


async def test_what_cannot_be_continued_or_asked_again_is_a_409(gateway) -> None:
    prompt = prompt_ending("stop", 400, "An answer that ended by itself")
    done = await start_chat(gateway, prompt=prompt, max_tokens=400)
    await wait_status(gateway, done, {"completed"}, timeout_s=60)
    response = await gateway.post(f"/api/workflows/{done}/continue")
    assert response.status_code == 409, response.text
    assert "stopped or cut" in response.json()["detail"]
    unknown = await gateway.post("/api/workflows/chat-nope/regenerate")
    assert unknown.status_code == 404
    blank = await gateway.post(f"/api/workflows/{done}/edit", json={"prompt": ""})
    assert blank.status_code == 422


async def test_a_keyed_start_with_another_prompt_is_an_edit_not_the_old_answer(
    gateway, temporal_client: Client
) -> None:
    """A client that keys its starts by message (the UI does) and sends an edited text
    under the same key gets a new version of the turn, not the old chat back."""
    conversation = f"conv-{uuid.uuid4().hex[:12]}"
    first = await _turn(gateway, conversation, unique_prompt(), max_tokens=20, idempotency_key="m1")
    edited_prompt = unique_prompt()
    again = await start_chat(
        gateway,
        prompt=edited_prompt,
        max_tokens=20,
        conversation_id=conversation,
        idempotency_key="m1",
    )
    assert again != first
    await wait_status(gateway, again, {"completed"}, timeout_s=60)
    request = await _request_of(temporal_client, again)
    assert request.prompt == edited_prompt and request.variant_of == first
    repeat = await start_chat(
        gateway, prompt=edited_prompt, conversation_id=conversation, idempotency_key="m1"
    )
    assert repeat == again  # the same edit twice is one chat
    view = await _conversation(gateway, conversation)
    assert view["head_id"] == again and view["turns"][0]["versions"] == [first, again]
