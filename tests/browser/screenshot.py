"""Take the README's screenshot of the UI: ``python -m tests.browser.screenshot [PATH]``.

Starts a stack on free ports (PostgreSQL, Temporal, the simulator, one worker, the
gateway) and the Chainlit UI with the browser tests' harness, asks two questions in
two conversations through Debian's Chromium, and saves a 1280x800 light-theme
screenshot of the second, finished answer with its badges, the first conversation in
the sidebar (default PATH: ``docs/images/chat.png``). Everything started is stopped by
pid at the end.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from playwright.async_api import Page, async_playwright

from testing.chats import wait_for
from testing.stack import ROOT, LocalStack
from tests.browser.harness import ASSERTION_ENV, CHROMIUM, CHROMIUM_ARGS, ChainlitServer

# Short answers (about 110 tokens) so a whole one fits on the screen.
APP_ENV = {"DEFAULT_MAX_TOKENS": "110", **ASSERTION_ENV}
SIMULATOR_ENV = {"SIM_TTFT_MS": "200", "SIM_TOKENS_PER_SECOND": "150"}
PROMPTS = [
    "What makes an answer durable?",
    "How does a chat survive a worker that is killed mid-answer?",
]
REPLY = '[data-step-type="assistant_message"]'


async def ask(page: Page, prompt: str) -> None:
    """Send `prompt` and wait until its reply shows the result badges."""
    replies_before = await page.locator(REPLY).count()
    await page.fill("#chat-input", prompt)
    await page.locator("#chat-submit:not([disabled])").click()

    async def finished() -> bool:
        texts = await page.locator(REPLY).all_inner_texts()
        return len(texts) > replies_before and "tokens" in texts[-1]

    await wait_for(finished, timeout_s=90, interval_s=0.25)


async def take(stack: LocalStack, chainlit: ChainlitServer, path: Path) -> None:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = await browser.new_context(
            viewport={"width": 1280, "height": 800}, color_scheme="light"
        )
        await context.add_init_script("localStorage.setItem('vite-ui-theme', 'light')")
        page = await context.new_page()
        await page.goto(f"{chainlit.url}/login")
        await page.fill("#email", chainlit.username)
        await page.fill("#password", chainlit.password)
        await page.click("button[type=submit]")
        await page.wait_for_selector("#chat-input")

        await ask(page, PROMPTS[0])
        await page.goto(chainlit.url)  # a new conversation; the first one is in the sidebar
        await page.wait_for_selector("#chat-input")
        await ask(page, PROMPTS[1])
        await page.mouse.move(0, 799)  # no hover highlight in the picture
        await asyncio.sleep(1.0)  # let the last render settle
        path.parent.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(path))
        await browser.close()


def main(argv: list[str]) -> None:
    path = Path(argv[0]) if argv else ROOT / "docs" / "images" / "chat.png"
    with tempfile.TemporaryDirectory(prefix="durable-chat-screenshot-") as workdir:
        stack = LocalStack(workdir=Path(workdir), simulator_env=SIMULATOR_ENV, app_env=APP_ENV)
        chainlit = ChainlitServer(stack, Path(workdir) / "chainlit")
        try:
            stack.start(workers=1)
            chainlit.start()
            asyncio.run(take(stack, chainlit, path))
        finally:
            chainlit.stop()
            stack.stop()
    print(f"saved {path} ({path.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main(sys.argv[1:])
