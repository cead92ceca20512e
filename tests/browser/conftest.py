"""Fixtures of the browser tests: a stack with a slow simulator, the Chainlit UI as a
subprocess, and Debian's Chromium driven by Playwright.

The shared ``stack`` fixture runs a fast simulator (an answer takes well under a second),
too fast to reload the page or restart a server while an answer is written. These tests
start their own stack with the same harness (``testing.stack.LocalStack``) and a
simulator that takes several seconds per answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright

from testing.keys import auth_headers
from testing.stack import LocalStack, started
from tests.browser.harness import (
    ASSERTION_ENV,
    CHROMIUM,
    CHROMIUM_ARGS,
    MAX_PROMPT_CHARS,
    SLOW_SIMULATOR_ENV,
    UI_USERNAME,
    ChainlitServer,
    logged_in,
    running_ui,
)


@pytest.fixture(scope="session")
def browser_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """PostgreSQL, Temporal, a slow simulator, one worker and the gateway, on free ports."""
    workdir = Path(tmp_path_factory.mktemp("browser-stack"))
    local = LocalStack(
        workdir=workdir,
        simulator_env=SLOW_SIMULATOR_ENV,
        app_env={"MAX_PROMPT_CHARS": str(MAX_PROMPT_CHARS), **ASSERTION_ENV},
    )
    with started(local, workers=1):
        yield local


@pytest.fixture(scope="session")
def ui_server(
    browser_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChainlitServer]:
    with running_ui(browser_stack, Path(tmp_path_factory.mktemp("chainlit"))) as server:
        yield server


@pytest.fixture
def chainlit(ui_server: ChainlitServer) -> ChainlitServer:
    """The UI server, running (a test before may have killed it)."""
    if ui_server.process is None or not ui_server.process.alive():
        ui_server.start()
    return ui_server


@pytest.fixture(scope="session")
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


@pytest.fixture
async def page(chromium: Browser, chainlit: ChainlitServer, tmp_path: Path) -> AsyncIterator[Page]:
    """A fresh browser context (no cookies), logged in to the UI; screenshot at the end."""
    async with logged_in(chromium, chainlit, tmp_path / "final.png") as tab:
        yield tab


@pytest.fixture
async def stack_gateway(browser_stack: LocalStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        # as the person logged in to the UI: the chats it starts are theirs
        base_url=browser_stack.gateway_url,
        timeout=30,
        headers=auth_headers(UI_USERNAME),
    ) as client:
        yield client


@pytest.fixture
async def stack_simulator(browser_stack: LocalStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=browser_stack.simulator_url, timeout=30) as client:
        yield client


@pytest.fixture
async def stack_db(browser_stack: LocalStack) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(browser_stack.database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()
