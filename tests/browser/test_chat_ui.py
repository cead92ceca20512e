"""The Chainlit UI in a real browser: reload and server restart mid-answer, stop, context.

Each test logs in (``page`` fixture), talks to the real stack through the UI only, and
checks what a person sees against what the simulator generated and what the gateway
and PostgreSQL recorded. A screenshot of each finished test is saved in its tmp_path.
"""

from __future__ import annotations

import re

import asyncpg
import httpx
import pytest
from playwright.async_api import Page

from tests.browser.harness import (
    MAX_PROMPT_CHARS,
    TEMPORAL_UI_URL,
    ChainlitServer,
    simulated_answer,
    simulator_request,
)
from tests.helpers import generations_for, unique_prompt, wait_for, wait_status

pytestmark = pytest.mark.browser

ANSWER_TIMEOUT_S = 90
REPLY = '[data-step-type="assistant_message"]'


def normalized(text: str) -> str:
    """Text with every run of whitespace made one space (markdown turns breaks into blocks)."""
    return " ".join(text.split())


async def chat_text(page: Page) -> str:
    """Everything the conversation area shows, normalized."""
    return normalized(await page.inner_text("body"))


async def replies(page: Page) -> list[str]:
    return [normalized(text) for text in await page.locator(REPLY).all_inner_texts()]


async def send(page: Page, prompt: str) -> str:
    """Send `prompt` once the UI is connected; return the conversation (thread) id."""
    await page.fill("#chat-input", prompt)
    await page.locator("#chat-submit:not([disabled])").click()
    await page.wait_for_function("location.pathname.startsWith('/thread/')")
    match = re.search(r"/thread/([^/?#]+)", page.url)
    assert match, page.url
    return match.group(1)


async def workflow_ids(db: asyncpg.Pool, conversation_id: str) -> list[str]:
    rows = await db.fetch(
        "SELECT workflow_id FROM generations WHERE conversation_id = $1 ORDER BY created_at",
        conversation_id,
    )
    return [row["workflow_id"] for row in rows]


async def only_workflow(db: asyncpg.Pool, conversation_id: str) -> str:
    ids = await wait_for(lambda: workflow_ids(db, conversation_id), timeout_s=30)
    assert len(ids) == 1, f"expected one workflow for the conversation, got {ids}"
    return ids[0]


async def wait_until_running(page: Page, gateway: httpx.AsyncClient, workflow_id: str) -> None:
    """The reply shows a running stage and the workflow is still running."""
    await page.locator(REPLY).filter(has_text="Temporal history").first.wait_for()
    status = (await gateway.get(f"/api/workflows/{workflow_id}/status")).json()
    assert status["status"] == "running", f"the answer ended too soon to test this: {status}"


async def wait_for_answer_once(page: Page, answer: str) -> None:
    """The page shows `answer` exactly once and the reply shows the result badges."""
    expected = normalized(answer)

    async def shown() -> bool:
        texts = await replies(page)
        ended = bool(texts) and "chunks saved" not in texts[-1] and "tokens" in texts[-1]
        return ended and expected in texts[-1]

    try:
        await wait_for(shown, timeout_s=ANSWER_TIMEOUT_S, interval_s=0.25)
    except TimeoutError:
        pytest.fail(f"answer not shown; replies on the page: {await replies(page)}")
    assert (await chat_text(page)).count(expected) == 1


async def test_reload_mid_answer_resumes_the_same_workflow(
    page: Page,
    chainlit: ChainlitServer,
    stack_gateway: httpx.AsyncClient,
    stack_simulator: httpx.AsyncClient,
    stack_db: asyncpg.Pool,
) -> None:
    prompt = unique_prompt("Reload test")
    conversation_id = await send(page, prompt)
    workflow_id = await only_workflow(stack_db, conversation_id)
    await wait_until_running(page, stack_gateway, workflow_id)

    await page.reload()

    answer = simulated_answer(await simulator_request(stack_simulator, prompt))
    await wait_for_answer_once(page, answer)
    assert page.url.endswith(f"/thread/{conversation_id}")
    assert await workflow_ids(stack_db, conversation_id) == [workflow_id]
    assert (await generations_for(stack_simulator, prompt))["started"] == 1
    link = page.locator(REPLY).get_by_role("link", name="Temporal history")
    href = await link.last.get_attribute("href")
    assert href == f"{TEMPORAL_UI_URL}/namespaces/default/workflows/{workflow_id}"

    # The conversation is in the sidebar; opened from there, its answer is complete.
    await page.goto(chainlit.url)
    await page.locator("#thread-history").get_by_text(prompt).click()
    await page.wait_for_function(f"location.pathname.endsWith('/thread/{conversation_id}')")
    await wait_for_answer_once(page, answer)


async def test_chainlit_restart_mid_answer_recovers(
    page: Page,
    chainlit: ChainlitServer,
    stack_gateway: httpx.AsyncClient,
    stack_simulator: httpx.AsyncClient,
    stack_db: asyncpg.Pool,
) -> None:
    prompt = unique_prompt("Restart test")
    conversation_id = await send(page, prompt)
    workflow_id = await only_workflow(stack_db, conversation_id)
    await wait_until_running(page, stack_gateway, workflow_id)

    chainlit.kill()
    chainlit.start()

    answer = simulated_answer(await simulator_request(stack_simulator, prompt))
    await wait_for_answer_once(page, answer)
    assert page.url.endswith(f"/thread/{conversation_id}")
    assert await workflow_ids(stack_db, conversation_id) == [workflow_id]
    assert (await generations_for(stack_simulator, prompt))["started"] == 1


async def test_stop_cancels_the_workflow(
    page: Page, stack_gateway: httpx.AsyncClient, stack_db: asyncpg.Pool
) -> None:
    conversation_id = await send(page, unique_prompt("Stop test"))
    workflow_id = await only_workflow(stack_db, conversation_id)
    await wait_until_running(page, stack_gateway, workflow_id)

    await page.locator("#stop-button").click()

    await wait_status(stack_gateway, workflow_id, {"cancelled"}, timeout_s=30)
    stopped = page.locator(REPLY).filter(has_text="the workflow was cancelled")
    await stopped.first.wait_for()
    assert await workflow_ids(stack_db, conversation_id) == [workflow_id]


async def test_second_turn_gets_the_first_as_context(
    page: Page, stack_simulator: httpx.AsyncClient, stack_db: asyncpg.Pool
) -> None:
    first_prompt = unique_prompt("First turn")
    conversation_id = await send(page, first_prompt)
    first_answer = simulated_answer(await simulator_request(stack_simulator, first_prompt))
    await wait_for_answer_once(page, first_answer)

    second_prompt = unique_prompt("Second turn")
    await send(page, second_prompt)
    second_request = await simulator_request(stack_simulator, second_prompt)
    await wait_for_answer_once(page, simulated_answer(second_request))

    history = [(m["role"], m["content"]) for m in second_request["messages"]]
    assert ("user", first_prompt) in history
    assert ("assistant", first_answer) in history
    assert history.index(("user", first_prompt)) < history.index(("user", second_prompt))
    assert len(await workflow_ids(stack_db, conversation_id)) == 2


async def test_rejected_prompt_is_a_clear_message(page: Page, stack_db: asyncpg.Pool) -> None:
    prompt = unique_prompt("x" * (MAX_PROMPT_CHARS + 10))
    conversation_id = await send(page, prompt)

    rejected = page.locator(REPLY).filter(has_text="This prompt was not accepted")
    await rejected.first.wait_for()
    text = normalized(await rejected.first.inner_text())
    assert f"the limit is {MAX_PROMPT_CHARS}" in text
    assert "Traceback" not in await chat_text(page)
    assert await workflow_ids(stack_db, conversation_id) == []
