"""The Chainlit UI as a test subprocess, and the settings the browser tests share."""

from __future__ import annotations

import contextlib
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Browser, Page

from llm_simulator.text import simulated_tokens
from testing.chats import wait_for
from testing.keys import TEST_API_KEYS, TEST_USER_ASSERTION_SECRET
from testing.stack import LocalStack, ManagedProcess, free_port, http_ok
from ui.users import add_user

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# About 5 s per answer: 300 ms to the first token, then 512 tokens at 100 per second.
# Slow enough (about 10 s for the default 512 tokens) that a reload or a restart lands
# mid-answer even on a loaded 2-core machine.
SLOW_SIMULATOR_ENV = {"SIM_TTFT_MS": "300", "SIM_TOKENS_PER_SECOND": "50"}
# Short enough that a test can send a prompt the gateway rejects (413).
MAX_PROMPT_CHARS = 200
UI_USERNAME = "browser-test"
# A second person, from the users file (the first comes from UI_USERNAME/UI_PASSWORD).
SECOND_USER = "browser-two"
SECOND_PASSWORD = "second-user-password-0123"
# The browser stack's gateway lets the UI's key act for the person logged in.
ASSERTION_ENV = {"USER_ASSERTION_SECRET": TEST_USER_ASSERTION_SECRET, "UI_SERVICE_USERS": "ui"}
TEMPORAL_UI_URL = "http://temporal-ui.test:8233"


@dataclass
class ChainlitServer:
    """``python -m ui`` on a free port, pointed at ``stack``; stopped and killed by pid."""

    stack: LocalStack
    log_dir: Path
    port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    auth_secret: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    process: ManagedProcess | None = None
    starts: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def username(self) -> str:
        return UI_USERNAME

    @property
    def users_file(self) -> Path:
        path = self.log_dir / "ui-users.json"
        if not path.exists():
            add_user(path, SECOND_USER, SECOND_PASSWORD)
        return path

    def env(self) -> dict[str, str]:
        return {
            "UI_USERS_FILE": str(self.users_file),
            # The UI acts for the person only where the stack's gateway accepts it.
            **(
                {"USER_ASSERTION_SECRET": TEST_USER_ASSERTION_SECRET}
                if "USER_ASSERTION_SECRET" in self.stack.app_env
                else {}
            ),
            "GATEWAY_URL": self.stack.gateway_url,
            "GATEWAY_API_KEY": TEST_API_KEYS["ui"],
            "DATABASE_URL": self.stack.database_url,
            "CHAINLIT_AUTH_SECRET": self.auth_secret,
            "UI_USERNAME": UI_USERNAME,
            "UI_PASSWORD": self.password,
            "UI_HOST": "127.0.0.1",
            "UI_PORT": str(self.port),
            "TEMPORAL_UI_URL": TEMPORAL_UI_URL,
            "TEMPORAL_NAMESPACE": "default",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }

    def start(self) -> None:
        self.starts += 1
        self.process = ManagedProcess(
            "chainlit",
            [sys.executable, "-m", "ui"],
            self.env(),
            self.log_dir / f"chainlit-{self.starts}.log",
        ).start()
        self.process.wait_until(lambda: http_ok(f"{self.url}/health"), timeout_s=60)

    def kill(self) -> None:
        """kill -9 the server, as a crash would."""
        if self.process is not None:
            self.process.kill(signal.SIGKILL)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def log_tail(self) -> str:
        return self.process.log_tail(80) if self.process else "(not started)"


async def simulator_request(simulator: httpx.AsyncClient, prompt: str) -> dict[str, Any]:
    """The simulator's record of the generation request whose last message is `prompt`."""

    async def find() -> dict[str, Any] | None:
        recent = (await simulator.get("/sim/requests", params={"limit": 200})).json()
        for request in reversed(recent):
            if request["messages"] and request["messages"][-1]["content"] == prompt:
                return dict(request)
        return None

    return await wait_for(find, timeout_s=30)


def simulated_answer(request: dict[str, Any]) -> str:
    """The exact text the simulator generated for this request."""
    tokens = simulated_tokens(
        request["messages"], request["model"], request["max_tokens"], request["temperature"]
    )
    return "".join(tokens)


@contextlib.contextmanager
def running_ui(stack: LocalStack, workdir: Path) -> Iterator[ChainlitServer]:
    """The Chainlit UI on `stack`, stopped by pid on the way out."""
    server = ChainlitServer(stack, workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def logged_in(
    browser: Browser,
    server: ChainlitServer,
    screenshot: Path,
    user: tuple[str, str] | None = None,
) -> AsyncIterator[Page]:
    """A fresh browser context (no cookies) logged in to the UI as its user (or as
    `user`, a name and password); a full-page screenshot to `screenshot` at the end."""
    name, password = user or (server.username, server.password)
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    tab = await context.new_page()
    await tab.goto(f"{server.url}/login")
    await tab.fill("#email", name)
    await tab.fill("#password", password)
    await tab.click("button[type=submit]")
    await tab.wait_for_selector("#chat-input")
    try:
        yield tab
    finally:
        await tab.screenshot(path=str(screenshot), full_page=True)
        await context.close()
