"""Two people in the chat UI at once: each logs in as themselves (one from the
environment's login, one from the users file), the gateway sees each as that person,
neither sees or opens the other's conversations, and an unfinished answer still
resumes after F5 for its owner."""

from __future__ import annotations

import base64
from pathlib import Path

import asyncpg
import httpx
import pytest
from playwright.async_api import Browser

from testing.chats import wait_for
from testing.keys import TEST_USER_ASSERTION_SECRET, auth_headers
from testing.oracle import unique_prompt
from testing.stack import LocalStack
from tests.browser.harness import (
    SECOND_PASSWORD,
    SECOND_USER,
    UI_USERNAME,
    ChainlitServer,
    logged_in,
)
from tests.browser.test_chat_ui import (
    assert_answered_once,
    chat_text,
    send,
    send_and_wait_until_running,
    workflow_ids,
)

pytestmark = pytest.mark.browser


async def _owner(db: asyncpg.Pool, workflow_id: str) -> str:
    return str(
        await db.fetchval("SELECT user_id FROM generations WHERE workflow_id = $1", workflow_id)
    )


async def test_two_users_at_once_see_and_resume_only_their_own(
    chromium: Browser,
    chainlit: ChainlitServer,
    browser_stack: LocalStack,
    stack_gateway: httpx.AsyncClient,
    stack_simulator: httpx.AsyncClient,
    stack_db: asyncpg.Pool,
    tmp_path: Path,
) -> None:
    async with (
        logged_in(chromium, chainlit, tmp_path / "first.png") as first,
        logged_in(
            chromium, chainlit, tmp_path / "second.png", (SECOND_USER, SECOND_PASSWORD)
        ) as second,
    ):
        mine = await send_and_wait_until_running(first, stack_gateway, stack_db, "First user's")
        async with httpx.AsyncClient(
            base_url=browser_stack.gateway_url, timeout=30, headers=auth_headers(SECOND_USER)
        ) as second_gateway:
            theirs = await send_and_wait_until_running(
                second, second_gateway, stack_db, "Second user's"
            )
            # The gateway saw two people, not the UI's one service user.
            assert await _owner(stack_db, mine.workflow_id) == UI_USERNAME
            assert await _owner(stack_db, theirs.workflow_id) == SECOND_USER
            # ...so each one's chat is a 404 for the other, on the API too.
            other = await second_gateway.get(f"/api/workflows/{mine.workflow_id}/status")
            assert other.status_code == 404

        # F5 mid-answer: the owner's unfinished answer resumes.
        await first.reload()
        await assert_answered_once(first, stack_simulator, stack_db, mine)

        # Neither sidebar lists the other's conversation.
        async def sidebar_shows(page, text: str) -> bool:  # type: ignore[no-untyped-def]
            return text in await page.locator("#thread-history").inner_text()

        await wait_for(lambda: sidebar_shows(second, theirs.prompt), timeout_s=30)
        assert not await sidebar_shows(second, mine.prompt)
        await wait_for(lambda: sidebar_shows(first, mine.prompt), timeout_s=30)
        assert not await sidebar_shows(first, theirs.prompt)

        # A URL of the other's thread is refused: nothing of it is shown.
        await second.goto(f"{chainlit.url}/thread/{mine.conversation_id}")
        await second.wait_for_timeout(2000)
        shown = await chat_text(second)
        assert mine.prompt not in shown


async def test_ui_passwords_and_user_assertions_never_reach_logs(
    chromium: Browser,
    chainlit: ChainlitServer,
    browser_stack: LocalStack,
    stack_gateway: httpx.AsyncClient,
    stack_db: asyncpg.Pool,
    tmp_path: Path,
) -> None:
    async with logged_in(
        chromium, chainlit, tmp_path / "final.png", (SECOND_USER, SECOND_PASSWORD)
    ) as page:
        async with httpx.AsyncClient(
            base_url=browser_stack.gateway_url, timeout=30, headers=auth_headers(SECOND_USER)
        ) as gateway:
            await send_and_wait_until_running(page, gateway, stack_db, "Secret-free logs")
    # Every assertion for this user starts with this (ui/assertions.py).
    assertion = "v1." + base64.urlsafe_b64encode(SECOND_USER.encode()).decode().rstrip("=") + "."
    secrets = [chainlit.password, SECOND_PASSWORD, TEST_USER_ASSERTION_SECRET, assertion]
    logs = [p.log_path for p in browser_stack.processes] + list(chainlit.log_dir.glob("*.log"))
    for path in logs:
        text = path.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, f"{secret[:6]}… appears in {path.name}"
    users = (chainlit.log_dir / "ui-users.json").read_text()
    assert SECOND_PASSWORD not in users and "scrypt$" in users  # a hash, never the password


async def test_behind_a_proxy_the_header_names_the_user(
    chromium: Browser,
    browser_stack: LocalStack,
    stack_db: asyncpg.Pool,
    tmp_path: Path,
) -> None:
    """UI_TRUSTED_USER_HEADER: Chainlit's header login with the user an authenticating
    proxy names (played here by the browser sending the header)."""
    server = ChainlitServer(
        browser_stack, tmp_path, extra_env={"UI_TRUSTED_USER_HEADER": "X-Forwarded-User"}
    )
    server.start()
    context = await chromium.new_context(extra_http_headers={"X-Forwarded-User": "proxy-user"})
    try:
        page = await context.new_page()
        await page.goto(server.url)
        await page.wait_for_selector("#chat-input", timeout=30_000)  # no login form
        conversation_id = await send(page, unique_prompt("Through the proxy"))
        [workflow_id] = await wait_for(lambda: workflow_ids(stack_db, conversation_id), 30)
        assert await _owner(stack_db, workflow_id) == "proxy-user"
    finally:
        await context.close()
        server.stop()
