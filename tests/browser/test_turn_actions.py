"""Stop, regenerate, edit and resend, continue, in Chromium (issue 18).

Each test drives the Chainlit UI only and checks what a person sees against what the
gateway keeps (chunks, status, the conversation's branches) and what the simulator was
asked (the context each turn was given).
"""

from __future__ import annotations

import asyncpg
import httpx
import pytest
from playwright.async_api import Page

from testing.chats import wait_for, wait_status
from testing.oracle import prompt_ending, unique_prompt
from testing.simulator import simulator_variant
from tests.browser.harness import simulated_answer, simulator_request
from tests.browser.test_chat_ui import (
    REPLY,
    normalized,
    replies,
    send,
    send_and_wait_until_running,
    wait_for_answer_once,
    workflow_ids,
)

pytestmark = pytest.mark.browser

USER_MESSAGE = '[data-step-type="user_message"]'
CHAINLIT_STOP_MESSAGE = "Task manually stopped."


async def _kept(gateway: httpx.AsyncClient, workflow_id: str) -> str:
    chunks = (await gateway.get(f"/api/workflows/{workflow_id}/chunks")).json()["chunks"]
    return "".join(chunk["text"] for chunk in chunks)


async def _stop_mid_answer(page: Page, gateway: httpx.AsyncClient, db: asyncpg.Pool, text: str):  # type: ignore[no-untyped-def]
    """Send a prompt, stop its answer once some text shows; returns (chat, kept text)."""
    chat = await send_and_wait_until_running(page, gateway, db, text)
    await page.locator(REPLY).last.filter(has_text="generating").wait_for()

    async def some_text() -> bool:
        status = (await gateway.get(f"/api/workflows/{chat.workflow_id}/status")).json()
        shown = normalized(await page.locator(REPLY).last.inner_text())
        return status["stage"] == "generating" and len(shown) > 120

    await wait_for(some_text, timeout_s=30, interval_s=0.1)
    await page.locator("#stop-button").click()
    await wait_status(gateway, chat.workflow_id, {"stopped"}, timeout_s=30)
    kept = await _kept(gateway, chat.workflow_id)
    assert kept
    return chat, kept


async def _reply_shows(page: Page, text: str, *also: str) -> None:
    expected = normalized(text)

    async def shown() -> bool:
        last = (await replies(page) or [""])[-1]
        return expected in last and all(a in last for a in also)

    try:
        await wait_for(shown, timeout_s=60, interval_s=0.25)
    except TimeoutError:
        pytest.fail(f"not shown: {expected[:80]}… {also}; replies: {await replies(page)}")


async def test_a_stopped_answer_stays_after_a_reload(
    page: Page, stack_gateway: httpx.AsyncClient, stack_db: asyncpg.Pool
) -> None:
    chat, kept = await _stop_mid_answer(page, stack_gateway, stack_db, "Stop me midway")

    await _reply_shows(page, kept, "Stopped", "tokens", "estimated")
    assert CHAINLIT_STOP_MESSAGE not in normalized(await page.inner_text("body"))
    assert len(await replies(page)) == 1  # one message, not two

    await page.reload()
    await page.locator(REPLY).first.wait_for()
    await _reply_shows(page, kept, "Stopped", "tokens")
    assert CHAINLIT_STOP_MESSAGE not in normalized(await page.inner_text("body"))
    assert len(await replies(page)) == 1
    status = (await stack_gateway.get(f"/api/workflows/{chat.workflow_id}/status")).json()
    assert status["stage"] == "stopped" and status["cost_usd"] > 0


async def test_a_second_turn_refers_to_the_stopped_text(
    page: Page,
    stack_gateway: httpx.AsyncClient,
    stack_db: asyncpg.Pool,
    stack_simulator: httpx.AsyncClient,
) -> None:
    chat, kept = await _stop_mid_answer(page, stack_gateway, stack_db, "Stop, then ask on")
    await _reply_shows(page, kept, "Stopped")

    second = unique_prompt("What was the last sentence you wrote?")
    await send(page, second)
    request = await simulator_request(stack_simulator, second)
    await wait_for_answer_once(page, simulated_answer(request))
    history = [(m["role"], m["content"]) for m in request["messages"]]
    assert ("user", chat.prompt) in history
    assert ("assistant", kept) in history


async def test_regenerate_then_switch_back(
    page: Page,
    stack_gateway: httpx.AsyncClient,
    stack_db: asyncpg.Pool,
    stack_simulator: httpx.AsyncClient,
) -> None:
    prompt = prompt_ending("stop", 512, "Regenerate me")
    conversation_id = await send(page, prompt)
    first_answer = simulated_answer(await simulator_request(stack_simulator, prompt))
    await wait_for_answer_once(page, first_answer)

    async with simulator_variant(stack_simulator, "regenerated"):
        await page.get_by_role("button", name="Regenerate", exact=True).click()
        ids = await wait_for(
            lambda: _when(workflow_ids(stack_db, conversation_id), lambda i: len(i) == 2),
            timeout_s=30,
        )
        await wait_status(stack_gateway, ids[1], {"completed"}, timeout_s=60)
    second_answer = await _kept(stack_gateway, ids[1])
    assert second_answer != first_answer
    await _reply_shows(page, second_answer, "tokens")
    assert normalized(first_answer) not in normalized(await page.inner_text("body"))

    await page.get_by_role("button", name="◀ version 2/2", exact=True).click()
    await _reply_shows(page, first_answer, "tokens")
    await page.get_by_role("button", name="version 1/2 ▶", exact=True).wait_for()
    assert len(await replies(page)) == 1

    await page.reload()  # the version chosen is the conversation's, not the page's
    await page.locator(REPLY).first.wait_for()
    await _reply_shows(page, first_answer)
    view = (await stack_gateway.get(f"/api/conversations/{conversation_id}")).json()
    assert view["head_id"] == ids[0] and view["turns"][0]["versions"] == ids


async def test_edit_an_earlier_message_starts_a_branch_and_keeps_the_old_one(
    page: Page,
    stack_gateway: httpx.AsyncClient,
    stack_db: asyncpg.Pool,
    stack_simulator: httpx.AsyncClient,
) -> None:
    one = prompt_ending("stop", 512, "First question")
    conversation_id = await send(page, one)
    await wait_for_answer_once(
        page, simulated_answer(await simulator_request(stack_simulator, one))
    )
    two = prompt_ending("stop", 512, "Second question")
    await send(page, two)
    two_answer = simulated_answer(await simulator_request(stack_simulator, two))
    await wait_for_answer_once(page, two_answer)

    first_message = page.locator(USER_MESSAGE).first
    await first_message.hover()
    await first_message.locator(".edit-message").click()
    edited = prompt_ending("stop", 512, "First question, edited")
    await page.fill("#edit-chat-input", edited)
    await page.locator(".confirm-edit").click()
    edited_answer = simulated_answer(await simulator_request(stack_simulator, edited))
    await _reply_shows(page, edited_answer, "tokens")
    assert len(await replies(page)) == 1  # the edited branch has one turn so far
    ids = await workflow_ids(stack_db, conversation_id)
    assert len(ids) == 3  # nothing deleted: both turns of the old branch are kept

    # the old branch is one click away, its second turn included
    await page.get_by_role("button", name="◀ version 2/2", exact=True).click()
    await _reply_shows(page, two_answer, "tokens")
    body = normalized(await page.inner_text("body"))
    assert normalized(one) in body and normalized(two) in body
    view = (await stack_gateway.get(f"/api/conversations/{conversation_id}")).json()
    assert [t["prompt"] for t in view["turns"]] == [one, two]
    assert len(await replies(page)) == 2

    # and back to the edited branch, from the first turn's version switch
    await page.get_by_role("button", name="version 1/2 ▶", exact=True).click()
    await _reply_shows(page, edited_answer, "tokens")
    assert len(await replies(page)) == 1
    assert normalized(two) not in normalized(await page.inner_text("body"))


async def test_continue_a_cut_answer_joins_the_two(
    page: Page,
    stack_gateway: httpx.AsyncClient,
    stack_db: asyncpg.Pool,
    stack_simulator: httpx.AsyncClient,
) -> None:
    prompt = prompt_ending("length", 512, "A long answer to continue")
    conversation_id = await send(page, prompt)
    cut = simulated_answer(await simulator_request(stack_simulator, prompt))
    await _reply_shows(page, cut, "cut at")

    await page.get_by_role("button", name="Continue", exact=True).click()
    ids = await wait_for(
        lambda: _when(workflow_ids(stack_db, conversation_id), lambda i: len(i) == 2),
        timeout_s=30,
    )
    await wait_status(stack_gateway, ids[1], {"completed"}, timeout_s=90)
    more = await _kept(stack_gateway, ids[1])
    await _reply_shows(page, cut + more)
    reply = (await replies(page))[-1]
    assert reply.count("Temporal history") == 2  # both badge lines, one message
    assert len(await replies(page)) == 1

    await page.reload()
    await page.locator(REPLY).first.wait_for()
    await _reply_shows(page, cut + more)
    assert (await replies(page))[-1].count("Temporal history") == 2


async def _when(value, predicate):  # type: ignore[no-untyped-def]
    result = await value
    return result if predicate(result) else None
