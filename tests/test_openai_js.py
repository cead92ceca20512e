"""/v1 through a second, independent client: the official openai JavaScript SDK, run
with the machine's Node.js (`make js-client` installs it from tests/openai_js's lock)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from testing.keys import TEST_API_KEYS
from testing.oracle import expected_answer, prompt_ending
from testing.stack import LocalStack
from tests.simulator_support import responses_event_types

CLIENT_DIR = Path(__file__).parent / "openai_js"


def run_js_client(gateway_url: str, prompt: str, max_tokens: int, model: str) -> dict[str, object]:
    node = shutil.which("node")
    if node is None or not (CLIENT_DIR / "node_modules" / "openai").is_dir():
        pytest.fail("the JavaScript SDK is not installed: run `make js-client`")
    completed = subprocess.run(
        [node, "resume.mjs"],
        cwd=CLIENT_DIR,
        env={
            **os.environ,
            "BASE_URL": f"{gateway_url}/v1",
            "API_KEY": TEST_API_KEYS["tester"],
            "MODEL": model,
            "PROMPT": prompt,
            "MAX_TOKENS": str(max_tokens),
            "DROP_AFTER": "6",
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result: dict[str, object] = json.loads(completed.stdout)
    return result


def test_js_sdk_drops_a_background_stream_and_resumes_it_exactly(fleet: LocalStack) -> None:
    max_tokens = 120
    prompt = prompt_ending("length", max_tokens, "JavaScript client")
    result = run_js_client(fleet.gateway_url, prompt, max_tokens, "simulator")
    first, rest = result["first"], result["rest"]
    assert isinstance(first, list) and isinstance(rest, list)
    events = first + rest
    # No event twice, none missed: the sequence numbers run 0, 1, 2, ... across the drop.
    assert [e["seq"] for e in events] == list(range(len(events)))
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert [e["type"] for e in events] == responses_event_types(
        background=True, deltas=len(deltas), end="incomplete"
    )
    assert "".join(deltas) == expected_answer(prompt, max_tokens) == result["output_text"]
    assert result["status"] == "incomplete"
    assert result["not_found"] == "NotFoundError 404"
    assert result["bad_key"] == "AuthenticationError 401"
    assert result["tools"] == "BadRequestError 400"
