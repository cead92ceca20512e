"""The Chainlit chat with the real model, in headless Chromium.

The UI, the browser and the page helpers are the browser tests' own
(tests/browser/harness.py, tests/browser/test_chat_ui.py), pointed at the real-model
stack. The model's answer is not known in advance, and it is markdown that the page
renders (symbols go, words stay): the words of the checkpointed answer must be the
reply's, in order.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from difflib import SequenceMatcher
from pathlib import Path

import asyncpg
import httpx
import pytest
from playwright.async_api import Page, async_playwright

from testing.chats import read_all_chunks, wait_for, wait_status
from testing.keys import auth_headers
from testing.oracle import unique_prompt
from testing.stack import LocalStack
from tests.browser.harness import (
    CHROMIUM,
    CHROMIUM_ARGS,
    UI_USERNAME,
    ChainlitServer,
    logged_in,
    running_ui,
)
from tests.browser.test_chat_ui import only_workflow, replies, send

pytestmark = [pytest.mark.real_model, pytest.mark.browser]


@pytest.fixture(scope="module")
def chainlit(
    llm_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChainlitServer]:
    with running_ui(llm_stack, Path(tmp_path_factory.mktemp("chainlit-real-model"))) as server:
        yield server


@pytest.fixture
async def page(chainlit: ChainlitServer, tmp_path: Path) -> AsyncIterator[Page]:
    """Logged in to the UI, in a fresh headless Chromium; screenshot at the end."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            async with logged_in(browser, chainlit, tmp_path / "final.png") as tab:
                yield tab
        finally:
            await browser.close()


@pytest.fixture
async def ui_gateway(llm_stack: LocalStack) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway as the person logged in to the UI (the chats it starts are theirs)."""
    async with httpx.AsyncClient(
        base_url=llm_stack.gateway_url, timeout=30, headers=auth_headers(UI_USERNAME)
    ) as client:
        yield client


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


async def test_chat_in_the_browser_shows_the_real_answer_once(
    page: Page, ui_gateway: httpx.AsyncClient, llm_db: asyncpg.Pool
) -> None:
    conversation_id = await send(page, unique_prompt("What is a durable workflow?"))
    workflow_id = await only_workflow(llm_db, conversation_id)
    status = await wait_status(ui_gateway, workflow_id, {"completed", "failed"}, timeout_s=120)
    assert status["status"] == "completed", status
    answer = "".join(c["text"] for c in await read_all_chunks(ui_gateway, workflow_id))

    async def finished_reply() -> str | None:
        texts = await replies(page)
        done = bool(texts) and "chunks saved" not in texts[-1] and "tokens" in texts[-1]
        return texts[-1] if done else None

    try:
        reply = await wait_for(finished_reply, timeout_s=60, interval_s=0.25)
    except TimeoutError:
        pytest.fail(f"no finished reply; replies on the page: {await replies(page)}")
    expected, shown = words(answer), words(reply)
    matcher = SequenceMatcher(a=expected, b=shown, autojunk=False)
    in_order = sum(block.size for block in matcher.get_matching_blocks())
    assert in_order >= 0.9 * len(expected), (answer, reply)
    # Once: the reply is the answer and its badges, not the answer twice.
    assert len(shown) < len(expected) + 40, (answer, reply)
    assert len(await replies(page)) == 1
