"""The Chainlit UI in a real browser: live text, reload and server restarts mid-answer,
a retried generation, stop, context.

Each test logs in (``page`` fixture), talks to the real stack through the UI only, and
checks what a person sees against what the simulator generated and what the gateway
and PostgreSQL recorded. A screenshot of each finished test is saved in its tmp_path.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
from playwright.async_api import Page

from testing.chats import generations_for, wait_for, wait_status
from testing.oracle import unique_prompt
from testing.sse import preview_text, read_sse
from testing.stack import LocalStack
from tests.browser.harness import (
    MAX_PROMPT_CHARS,
    TEMPORAL_UI_URL,
    ChainlitServer,
    simulated_answer,
    simulator_request,
)

pytestmark = pytest.mark.browser

ANSWER_TIMEOUT_S = 90
REPLY = '[data-step-type="assistant_message"]'
SIMULATOR_HEADER = "[Simulated reply from the durable-chat LLM simulator]"
# A running reply: the answer so far, then the footer (stage badge, link to Temporal).
GENERATING_REPLY = re.compile(r"(?P<answer>.*) generating Temporal history ↗")


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


@dataclass(frozen=True)
class RunningChat:
    """A prompt sent through the UI, and the workflow generating its answer."""

    prompt: str
    conversation_id: str
    workflow_id: str


async def send_and_wait_until_running(
    page: Page, gateway: httpx.AsyncClient, db: asyncpg.Pool, text: str
) -> RunningChat:
    """Send a unique prompt made of `text`; return once its only workflow is generating."""
    prompt = unique_prompt(text)
    conversation_id = await send(page, prompt)
    workflow_id = await only_workflow(db, conversation_id)
    await wait_until_running(page, gateway, workflow_id)
    return RunningChat(prompt, conversation_id, workflow_id)


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
    # The reply is the answer, then its badges: nothing before it, no prefix repeated.
    reply = (await replies(page))[-1]
    assert reply.startswith(f"{expected} "), reply
    assert reply.count(SIMULATOR_HEADER) == 1, reply


async def assert_answered_once(
    page: Page, simulator: httpx.AsyncClient, db: asyncpg.Pool, chat: RunningChat
) -> str:
    """The page shows the simulated answer once; the chat still has one workflow, and the
    simulator generated the answer once. Returns the answer."""
    answer = simulated_answer(await simulator_request(simulator, chat.prompt))
    await wait_for_answer_once(page, answer)
    assert await workflow_ids(db, chat.conversation_id) == [chat.workflow_id]
    assert (await generations_for(simulator, chat.prompt))["started"] == 1
    return answer


async def test_answer_shows_live_before_it_is_checkpointed(
    page: Page,
    stack_gateway: httpx.AsyncClient,
    stack_simulator: httpx.AsyncClient,
    stack_db: asyncpg.Pool,
) -> None:
    prompt = unique_prompt("Live text test")
    conversation_id = await send(page, prompt)
    workflow_id = await only_workflow(stack_db, conversation_id)
    answer = simulated_answer(await simulator_request(stack_simulator, prompt))

    async def live_text() -> str | None:
        """Text the page shows while the gateway still says the LLM is generating."""
        texts = await replies(page)
        match = GENERATING_REPLY.fullmatch(texts[-1]) if texts else None
        shown = match.group("answer") if match else ""
        status = (await stack_gateway.get(f"/api/workflows/{workflow_id}/status")).json()
        assert status["stage"] in ("queued", "validating", "generating"), (
            f"the answer was not shown before it was checkpointed: {status}, {texts}"
        )
        return shown if status["stage"] == "generating" and shown else None

    shown = await wait_for(live_text, timeout_s=30, interval_s=0.05)
    assert normalized(answer).startswith(shown)
    assert len(shown) < len(normalized(answer))

    await wait_for_answer_once(page, answer)
    assert (await generations_for(stack_simulator, prompt))["started"] == 1


async def test_reload_mid_answer_resumes_the_same_workflow(
    page: Page,
    chainlit: ChainlitServer,
    stack_gateway: httpx.AsyncClient,
    stack_simulator: httpx.AsyncClient,
    stack_db: asyncpg.Pool,
) -> None:
    chat = await send_and_wait_until_running(page, stack_gateway, stack_db, "Reload test")

    await page.reload()

    answer = await assert_answered_once(page, stack_simulator, stack_db, chat)
    assert page.url.endswith(f"/thread/{chat.conversation_id}")
    link = page.locator(REPLY).get_by_role("link", name="Temporal history")
    href = await link.last.get_attribute("href")
    assert href == f"{TEMPORAL_UI_URL}/namespaces/default/workflows/{chat.workflow_id}"

    # The conversation is in the sidebar; opened from there, its answer is complete.
    await page.goto(chainlit.url)
    await page.locator("#thread-history").get_by_text(chat.prompt).click()
    await page.wait_for_function(f"location.pathname.endsWith('/thread/{chat.conversation_id}')")
    await wait_for_answer_once(page, answer)


async def test_chainlit_restart_mid_answer_recovers(
    page: Page,
    chainlit: ChainlitServer,
    stack_gateway: httpx.AsyncClient,
    stack_simulator: httpx.AsyncClient,
    stack_db: asyncpg.Pool,
) -> None:
    chat = await send_and_wait_until_running(page, stack_gateway, stack_db, "Restart test")

    chainlit.kill()
    chainlit.start()

    await assert_answered_once(page, stack_simulator, stack_db, chat)
    assert page.url.endswith(f"/thread/{chat.conversation_id}")


async def test_stop_cancels_the_workflow(
    page: Page, stack_gateway: httpx.AsyncClient, stack_db: asyncpg.Pool
) -> None:
    chat = await send_and_wait_until_running(page, stack_gateway, stack_db, "Stop test")

    await page.locator("#stop-button").click()

    # it was writing: the text shown is kept (tests/browser/test_turn_actions.py)
    await wait_status(stack_gateway, chat.workflow_id, {"stopped"}, timeout_s=30)
    stopped = page.locator(REPLY).filter(has_text="Stopped: the answer is kept")
    await stopped.first.wait_for()
    assert await workflow_ids(stack_db, chat.conversation_id) == [chat.workflow_id]


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


def restart_gateway(stack: LocalStack, app_env: dict[str, str]) -> None:
    """Restart the stack's gateway on the same port with `app_env` (blocking)."""
    assert stack.gateway is not None
    stack.gateway.stop()
    stack.app_env = app_env
    stack.start_gateway()


@contextlib.asynccontextmanager
async def gateway_settings(stack: LocalStack, **env: str) -> AsyncIterator[None]:
    """The gateway runs with `env` added (restarted with it), and as before afterwards."""
    saved = dict(stack.app_env)
    if env:
        await asyncio.to_thread(restart_gateway, stack, {**saved, **env})
    try:
        yield
    finally:
        if env:
            await asyncio.to_thread(restart_gateway, stack, saved)


@pytest.mark.parametrize("generation_mode", ["auto", "restart"])
async def test_generation_retried_mid_answer_shows_the_answer_once(
    generation_mode: str,
    page: Page,
    browser_stack: LocalStack,
    stack_gateway: httpx.AsyncClient,
    stack_simulator: httpx.AsyncClient,
    stack_db: asyncpg.Pool,
) -> None:
    """The LLM connection is cut after 40 tokens. With the simulator, `auto` resumes: the
    retried call re-attaches to the same generation and the text goes on. `restart`
    starts the call over: a `reset` event, and the page drops its text and says so."""
    restarts = generation_mode == "restart"
    env = {"GENERATION_MODE": generation_mode} if restarts else {}
    fault = {"fault": "disconnect", "count": 1, "after_tokens": 40}
    async with gateway_settings(browser_stack, **env):
        (await stack_simulator.post("/sim/faults", json=fault)).raise_for_status()
        try:
            prompt = unique_prompt("Retry test")
            conversation_id = await send(page, prompt)
            workflow_id = await only_workflow(stack_db, conversation_id)
            if restarts:
                note = page.locator(REPLY).filter(has_text="The answer restarted")
                await note.first.wait_for()
            answer = simulated_answer(await simulator_request(stack_simulator, prompt))
            await wait_for_answer_once(page, answer)
            assert (await stack_simulator.get("/sim/faults")).json()["remaining"] == 0
        finally:
            (await stack_simulator.delete("/sim/faults")).raise_for_status()
        events = await read_sse(stack_gateway, workflow_id)
        status = (await stack_gateway.get(f"/api/workflows/{workflow_id}/status")).json()

    assert status["generation_mode"] == ("restart" if restarts else "resume")
    assert preview_text(events) == answer  # every delta continues the text before it
    assert [event["event"] for event in events].count("reset") == (1 if restarts else 0)
    assert ("restarted once" in (await replies(page))[-1]) is restarts
    generations = (await generations_for(stack_simulator, prompt))["started"]
    assert generations == (2 if restarts else 1)


async def test_gateway_restart_mid_answer_reconnects(
    page: Page,
    browser_stack: LocalStack,
    stack_gateway: httpx.AsyncClient,
    stack_simulator: httpx.AsyncClient,
    stack_db: asyncpg.Pool,
) -> None:
    chat = await send_and_wait_until_running(page, stack_gateway, stack_db, "Gateway restart test")

    assert browser_stack.gateway is not None
    browser_stack.gateway.kill()
    await page.locator(REPLY).filter(has_text="Gateway unreachable, retrying").first.wait_for()
    await asyncio.to_thread(browser_stack.start_gateway)  # same port

    await assert_answered_once(page, stack_simulator, stack_db, chat)
    assert "Gateway unreachable" not in (await replies(page))[-1]
