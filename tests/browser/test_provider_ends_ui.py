"""How the provider ended an answer, as a person sees it in the Chainlit UI: an answer cut
at max_tokens says so, and an answer that failed because the provider was down offers a
Retry button that asks again in the same reply, once, and survives F5.

These tests run their own stack (module scope): the gateway's default max_tokens is
short, so an answer is cut after a few seconds, and the workers give the provider
``LLM_OUTAGE_TOLERANCE_S`` = 3 s, so a chat fails soon after the simulator starts
refusing requests (``http_500``). This module's ``browser_stack`` and ``chainlit``
fixtures replace the conftest's, so its ``page``, ``stack_gateway``, ``stack_simulator``
and ``stack_db`` fixtures talk to this stack. Screenshots go to each test's tmp_path.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import asyncpg
import httpx
import pytest
from playwright.async_api import Page

from testing.chats import generations_for, read_all_chunks, wait_for, wait_status
from testing.oracle import expected_answer, prompt_ending
from testing.stack import LocalStack, started
from tests.browser.harness import ASSERTION_ENV, ChainlitServer, running_ui
from tests.browser.test_chat_ui import (
    REPLY,
    normalized,
    only_workflow,
    replies,
    send,
    wait_for_answer_once,
    workflow_ids,
)
from ui.gateway_client import WorkflowStatus
from ui.live_answer import LiveAnswer
from ui.rendering import TemporalLinks, render_ended
from ui.turn_record import (
    METADATA_KEY,
    RetryableTurn,
    TurnRecord,
    retryable_turns,
    unfinished_turns,
)

pytestmark = pytest.mark.browser

MAX_TOKENS = 120
OUTAGE_TOLERANCE_S = 3
APP_ENV = {
    "DEFAULT_MAX_TOKENS": str(MAX_TOKENS),
    "LLM_OUTAGE_TOLERANCE_S": str(OUTAGE_TOLERANCE_S),
    **ASSERTION_ENV,
}
# About 4 s per answer: long enough to reload the page while one is written.
SIMULATOR_ENV = {"SIM_TTFT_MS": "300", "SIM_TOKENS_PER_SECOND": "30"}
# More refusals than the attempts made within the tolerance (1 s, then 2 s of backoff).
REFUSALS = 50
RETRY_BUTTON = "Retry"
FAILED_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def browser_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """PostgreSQL, Temporal, the simulator, one worker and the gateway, with APP_ENV."""
    local = LocalStack(
        workdir=Path(tmp_path_factory.mktemp("provider-ends-stack")),
        simulator_env=SIMULATOR_ENV,
        app_env=APP_ENV,
    )
    with started(local, workers=1):
        yield local


@pytest.fixture(scope="module")
def chainlit(
    browser_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChainlitServer]:
    with running_ui(browser_stack, Path(tmp_path_factory.mktemp("chainlit"))) as server:
        yield server


@pytest.fixture
async def provider_down(stack_simulator: httpx.AsyncClient) -> AsyncIterator[None]:
    """The simulator refuses generation requests with 500 until the test disarms it."""
    fault = {"fault": "http_500", "count": REFUSALS}
    (await stack_simulator.post("/sim/faults", json=fault)).raise_for_status()
    try:
        yield
    finally:
        (await stack_simulator.delete("/sim/faults")).raise_for_status()


def footer(reply: str, answer: str) -> str:
    """What the reply shows after the answer: notices and badges."""
    assert reply.startswith(f"{normalized(answer)} "), reply
    return reply[len(normalized(answer)) :]


@pytest.mark.parametrize("ending", ["length", "stop"])
async def test_an_answer_cut_at_the_limit_says_so(
    ending: str,
    page: Page,
    stack_gateway: httpx.AsyncClient,
    stack_db: asyncpg.Pool,
    tmp_path: Path,
) -> None:
    prompt = prompt_ending(ending, MAX_TOKENS)
    conversation_id = await send(page, prompt)
    workflow_id = await only_workflow(stack_db, conversation_id)
    status = await wait_status(stack_gateway, workflow_id, {"completed"})
    chunks = await read_all_chunks(stack_gateway, workflow_id)
    checkpointed = "".join(chunk["text"] for chunk in chunks)
    assert checkpointed == expected_answer(prompt, MAX_TOKENS)

    await wait_for_answer_once(page, checkpointed)
    [reply] = await replies(page)
    shown = footer(reply, checkpointed)
    cut = status["usage"]["completion_tokens"]
    if ending == "length":
        assert cut == MAX_TOKENS
        assert f"Cut at {cut} tokens: the answer reached max_tokens" in shown, shown
        assert f"cut at {cut} tokens" in shown, shown
    else:
        assert cut < MAX_TOKENS
        assert "cut at" not in shown.lower(), shown
    await page.screenshot(path=str(tmp_path / f"{ending}.png"), full_page=True)


async def fail_with_an_outage(
    page: Page, gateway: httpx.AsyncClient, db: asyncpg.Pool, prompt: str
) -> tuple[str, str]:
    """Send `prompt` while the provider is down; return the conversation and the failed
    workflow once the reply says so and offers Retry."""
    conversation_id = await send(page, prompt)
    failed_id = await only_workflow(db, conversation_id)
    status = await wait_status(gateway, failed_id, {"failed"}, timeout_s=FAILED_TIMEOUT_S)
    assert status["error_type"] == "ProviderOutageError" and status["retryable"], status
    failed = page.locator(REPLY).filter(has_text="The answer failed")
    await failed.first.wait_for()
    await page.get_by_role("button", name=RETRY_BUTTON).wait_for()
    [reply] = await replies(page)
    assert "The LLM provider has been unavailable for" in reply, reply
    assert "use Retry below to ask again" in reply, reply
    return conversation_id, failed_id


async def click_retry(page: Page) -> None:
    """Click Retry twice in a row, faster than the page can disable it (a real double click
    lets the page catch up): two clicks must not start two workflows."""
    button = page.get_by_role("button", name=RETRY_BUTTON)
    await button.evaluate("button => { button.click(); button.click(); }")


async def retried_workflow(db: asyncpg.Pool, conversation_id: str, failed_id: str) -> str:
    """The one workflow started by Retry (the conversation has the failed one and it)."""

    async def two() -> list[str] | None:
        ids = await workflow_ids(db, conversation_id)
        return ids if len(ids) >= 2 else None

    ids = await wait_for(two, timeout_s=30)
    assert len(ids) == 2 and ids[0] == failed_id, ids
    return ids[1]


async def check_retried_answer(
    page: Page,
    gateway: httpx.AsyncClient,
    simulator: httpx.AsyncClient,
    db: asyncpg.Pool,
    prompt: str,
    conversation_id: str,
    failed_id: str,
) -> None:
    """The same reply shows the new answer, from exactly one new workflow, and its turn
    record names that workflow (what a reload follows)."""
    answer = expected_answer(prompt, MAX_TOKENS)
    await wait_for_answer_once(page, answer)
    [reply] = await replies(page)  # the answer replaced the failure, in the same reply
    shown = footer(reply, answer)
    assert "asked again after a failure" in shown and "failed" not in shown, shown
    assert await page.get_by_role("button", name=RETRY_BUTTON).count() == 0

    retry_id = await retried_workflow(db, conversation_id, failed_id)
    status = (await gateway.get(f"/api/workflows/{retry_id}/status")).json()
    assert status["status"] == "completed" and status["retry_of"] == failed_id, status
    # The refused requests started nothing: the retry's is the prompt's only generation.
    assert await generations_for(simulator, prompt) == {"started": 1, "completed": 1}
    assert await turn_records(db, conversation_id) == [
        {
            "prompt_message_id": ANY,
            "workflow_id": retry_id,
            "state": "done",
            "retry_of": failed_id,
            "retryable": False,
            "parts": [],
            "edit_of": None,
            "conversation_id": conversation_id,
        }
    ]


async def turn_records(db: asyncpg.Pool, conversation_id: str) -> list[Any]:
    """The turn records persisted in the conversation's replies (Chainlit's Step table)."""
    rows = await db.fetch(
        """SELECT metadata FROM "Step" WHERE "threadId" = $1 AND type = 'assistant_message'""",
        conversation_id,
    )
    return [json.loads(row["metadata"]).get(METADATA_KEY) for row in rows]


async def reload_and_see_the_answer(page: Page, prompt: str) -> None:
    await page.reload()
    await wait_for_answer_once(page, expected_answer(prompt, MAX_TOKENS))
    [reply] = await replies(page)
    assert "The answer failed" not in reply, reply
    assert await page.get_by_role("button", name=RETRY_BUTTON).count() == 0


async def test_retry_after_an_outage_answers_in_the_same_reply(
    page: Page,
    provider_down: None,
    stack_gateway: httpx.AsyncClient,
    stack_simulator: httpx.AsyncClient,
    stack_db: asyncpg.Pool,
    tmp_path: Path,
) -> None:
    prompt = prompt_ending("length", MAX_TOKENS, "Provider down")
    conversation_id, failed_id = await fail_with_an_outage(page, stack_gateway, stack_db, prompt)
    await page.screenshot(path=str(tmp_path / "failed.png"), full_page=True)

    (await stack_simulator.delete("/sim/faults")).raise_for_status()  # the provider is back
    await click_retry(page)
    await check_retried_answer(
        page, stack_gateway, stack_simulator, stack_db, prompt, conversation_id, failed_id
    )
    await page.screenshot(path=str(tmp_path / "retried.png"), full_page=True)

    await reload_and_see_the_answer(page, prompt)
    assert page.url.endswith(f"/thread/{conversation_id}")


async def test_retry_survives_reloads_before_and_during_the_new_answer(
    page: Page,
    provider_down: None,
    stack_gateway: httpx.AsyncClient,
    stack_simulator: httpx.AsyncClient,
    stack_db: asyncpg.Pool,
    tmp_path: Path,
) -> None:
    prompt = prompt_ending("length", MAX_TOKENS, "Provider down, then reload")
    conversation_id, failed_id = await fail_with_an_outage(page, stack_gateway, stack_db, prompt)
    (await stack_simulator.delete("/sim/faults")).raise_for_status()

    # Chainlit does not keep buttons: the resumed page gets Retry back from the turn record.
    await page.reload()
    await page.get_by_role("button", name=RETRY_BUTTON).wait_for()
    [reply] = await replies(page)
    assert "The LLM provider has been unavailable for" in reply, reply

    await click_retry(page)
    retry_id = await retried_workflow(stack_db, conversation_id, failed_id)
    await page.locator(REPLY).filter(has_text="generating").first.wait_for()
    status = (await stack_gateway.get(f"/api/workflows/{retry_id}/status")).json()
    assert status["status"] == "running", f"the retry ended too soon to test this: {status}"
    await page.screenshot(path=str(tmp_path / "retrying.png"), full_page=True)

    await page.reload()  # mid-answer: the page follows the new workflow again
    await check_retried_answer(
        page, stack_gateway, stack_simulator, stack_db, prompt, conversation_id, failed_id
    )
    await page.screenshot(path=str(tmp_path / "reloaded.png"), full_page=True)


# The same without a browser: what the reply says, and what a reload offers.

LINKS = TemporalLinks("http://localhost:8233", "default")


def test_a_failure_retry_can_fix_points_to_retry_and_the_retried_answer_says_so() -> None:
    outage = {"workflow_id": "chat-1", "status": "failed", "error": "The provider is down."}
    failed = WorkflowStatus.from_json({**outage, "retryable": True, "llm_calls": 0, "cost_usd": 0})
    text = render_ended(LiveAnswer(), failed, links=LINKS, workflow_id="chat-1")
    assert text.startswith("**The answer failed**: The provider is down. — use **Retry** below")
    assert "$" not in text  # no LLM call was made: no cost to show
    refused = WorkflowStatus.from_json({**outage, "retryable": False})
    assert "Retry" not in render_ended(LiveAnswer(), refused, links=LINKS, workflow_id="chat-1")

    retried = WorkflowStatus.from_json(
        {"workflow_id": "chat-2", "status": "completed", "retry_of": "chat-1",
         "finish_reason": "length", "notice": "Cut at 120 tokens: it reached max_tokens.",
         "usage": {"prompt_tokens": 6, "completion_tokens": 120}, "llm_calls": 1,
         "cost_usd": 0.0001}
    )  # fmt: skip
    text = render_ended(LiveAnswer(), retried, links=LINKS, workflow_id="chat-2")
    assert text.startswith("*Cut at 120 tokens: it reached max_tokens.*\n\n`fresh` `126 tokens")
    assert "`cut at 120 tokens` `~$0.0001 estimated` `asked again after a failure`" in text


def test_a_reload_offers_retry_only_for_failed_turns_that_can_be_asked_again() -> None:
    records = [
        TurnRecord("u1", "chat-1", "done", retryable=True),
        TurnRecord("u2", "chat-2", "done"),
        TurnRecord("u3", "chat-4", "running", retry_of="chat-3"),
    ]
    steps = [
        {"id": f"r{n}", "type": "assistant_message", "metadata": record.to_metadata()}
        for n, record in enumerate(records, start=1)
    ]
    assert [TurnRecord.from_metadata(step["metadata"]) for step in steps] == records
    assert retryable_turns(steps) == [RetryableTurn(reply_id="r1", workflow_id="chat-1")]
    # A retried turn still running is followed again, by its new workflow.
    [unfinished] = unfinished_turns(steps)
    assert (unfinished.reply["id"], unfinished.record.workflow_id) == ("r3", "chat-4")
