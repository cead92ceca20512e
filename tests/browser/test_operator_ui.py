"""What a person sees in the Chainlit UI when an operator terminates their chat in
Temporal's CLI mid-answer: the reply says "Terminated" with the operator's reason at
once (the gateway's stream ends with a ``terminated`` event), stops waiting, offers
Retry, and still says so after F5.

Uses the conftest's session stack (slow simulator), slowed further with ``POST /sim/pace``
so the answer is still being written when the operator acts. A screenshot of each step
is saved in the test's tmp_path (and ``final.png`` by the ``page`` fixture).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest
from playwright.async_api import Page

from testing.chats import read_all_chunks, wait_for, wait_status
from testing.operator import operator
from testing.oracle import unique_prompt
from testing.simulator import simulator_pace
from testing.stack import LocalStack
from tests.browser.test_chat_ui import (
    GENERATING_REPLY,
    REPLY,
    SIMULATOR_HEADER,
    normalized,
    only_workflow,
    replies,
    send,
    workflow_ids,
)

pytestmark = pytest.mark.browser

# 512 tokens (the gateway's default) at 8 tokens per second: about a minute of answer.
SLOW_TOKENS_PER_SECOND = 8
# Text on screen before the operator acts: some words after the simulator's header.
SHOWN_CHARS = len(SIMULATOR_HEADER) + 40
# How soon after the CLI returns the reply must say the answer was terminated.
TERMINATED_SHOWN_S = 15
RETRY_BUTTON = "Retry"


async def terminate(stack: LocalStack, workflow_id: str, reason: str) -> None:
    """`temporal workflow terminate` against the stack's server, as an operator would."""
    await operator(stack, "workflow", "terminate", "--workflow-id", workflow_id, "--reason", reason)


async def live_text(page: Page) -> str | None:
    """The answer the running reply shows, once it is at least SHOWN_CHARS long."""
    texts = await replies(page)
    match = GENERATING_REPLY.fullmatch(texts[-1]) if texts else None
    shown = match.group("answer") if match else ""
    return shown if len(shown) >= SHOWN_CHARS else None


async def assert_shows_terminated(page: Page, reason: str) -> str:
    """The one reply says Terminated with `reason`, is no longer running, and offers
    Retry; returns the reply's text."""
    [reply] = await replies(page)
    assert "Terminated:" in reply, reply
    assert "Terminated by an operator with the temporal CLI" in reply, reply
    assert reason in reply, reply
    assert "what was saved is kept above" in reply or "nothing was saved" in reply, reply
    # Not waiting any more: no running badges, no stop button, the input is back.
    assert "generating" not in reply and "chunks saved" not in reply, reply
    assert await page.locator("#stop-button").count() == 0
    await page.locator("#chat-submit").wait_for()
    await page.get_by_role("button", name=RETRY_BUTTON, exact=True).wait_for()
    return reply


async def test_operator_terminate_in_the_cli_ends_the_reply_visibly(
    page: Page,
    browser_stack: LocalStack,
    stack_gateway: httpx.AsyncClient,
    stack_simulator: httpx.AsyncClient,
    stack_db: asyncpg.Pool,
    tmp_path: Path,
) -> None:
    prompt = unique_prompt("Operator terminate test")
    reason = f"stuck answer {uuid.uuid4().hex[:8]}"
    async with simulator_pace(stack_simulator, SLOW_TOKENS_PER_SECOND):
        conversation_id = await send(page, prompt)
        workflow_id = await only_workflow(stack_db, conversation_id)
        shown = await wait_for(lambda: live_text(page), timeout_s=60, interval_s=0.1)
        assert shown is not None
        status = (await stack_gateway.get(f"/api/workflows/{workflow_id}/status")).json()
        assert status["status"] == "running", f"the answer ended too soon to test this: {status}"
        await page.screenshot(path=str(tmp_path / "streaming.png"), full_page=True)

        await terminate(browser_stack, workflow_id, reason)
        terminated_at = time.monotonic()

        ended = page.locator(REPLY).filter(has_text="Terminated")
        await ended.first.wait_for(timeout=TERMINATED_SHOWN_S * 1000)
        await page.get_by_role("button", name=RETRY_BUTTON, exact=True).wait_for(
            timeout=TERMINATED_SHOWN_S * 1000
        )
        shown_after_s = time.monotonic() - terminated_at
    print(f"Terminated shown {shown_after_s:.1f} s after the CLI returned")
    assert shown_after_s <= TERMINATED_SHOWN_S

    reply = await assert_shows_terminated(page, reason)
    await page.screenshot(path=str(tmp_path / "terminated.png"), full_page=True)
    status = await wait_status(stack_gateway, workflow_id, {"terminated"}, timeout_s=10)
    assert status["error"].startswith("Terminated by an operator with the temporal CLI")
    assert status["error"].endswith(reason) and status["retryable"] is True, status
    # The reply keeps the checkpointed part of the answer (what the gateway serves as
    # chunks), then says it was terminated.
    saved = normalized(
        "".join(c["text"] for c in await read_all_chunks(stack_gateway, workflow_id))
    )
    if saved:
        assert reply.startswith(f"{saved} Terminated:"), (saved, reply)
        assert "what was saved is kept above" in reply, reply
        assert normalized(shown).startswith(saved) or saved.startswith(normalized(shown))
    else:
        assert reply.startswith("Terminated:") and "nothing was saved" in reply, reply

    await page.reload()  # F5: the same reply, still terminated, nothing started again
    await page.locator(REPLY).filter(has_text="Terminated").first.wait_for()
    assert page.url.endswith(f"/thread/{conversation_id}")
    reloaded = await assert_shows_terminated(page, reason)
    assert reloaded == reply, (reloaded, reply)
    assert await workflow_ids(stack_db, conversation_id) == [workflow_id]
    await page.screenshot(path=str(tmp_path / "reloaded.png"), full_page=True)
