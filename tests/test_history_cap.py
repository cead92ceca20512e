"""HISTORY_MAX_CHARS: only the most recent whole exchanges of a conversation go into a
chat's workflow input."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
import temporalio.converter
from temporalio.client import Client

from common.history import TURN_OVERHEAD_CHARS, recent_turns
from common.models import ChatRequest, Turn
from testing.chats import wait_status
from testing.keys import auth_headers
from testing.oracle import expected_answer, unique_prompt
from testing.stack import LocalStack


def _exchange(question: str, answer: str) -> list[Turn]:
    return [Turn("user", question), Turn("assistant", answer)]


T = TURN_OVERHEAD_CHARS
OLD = _exchange("a" * 10, "b" * 20)  # charged 30 + 2 T
MIDDLE = _exchange("c" * 5, "d" * 15)  # 20 + 2 T
NEW = _exchange("e" * 4, "f" * 6)  # 10 + 2 T
CONVERSATION = [*OLD, *MIDDLE, *NEW]


@pytest.mark.parametrize(
    ("max_chars", "kept", "dropped"),
    [
        (60 + 6 * T, CONVERSATION, 0),  # everything fits, exactly
        (10_000, CONVERSATION, 0),
        (59 + 6 * T, [*MIDDLE, *NEW], 2),  # the oldest exchange goes whole
        (30 + 4 * T, [*MIDDLE, *NEW], 2),
        (29 + 4 * T, NEW, 4),  # never the middle answer without its question (25 + 3 T)
        (10 + 2 * T, NEW, 4),
        (9 + 2 * T, [], 6),  # the newest exchange alone does not fit: nothing is sent
        (10, [], 6),  # its contents alone would fit, its turns' overhead does not
        (0, [], 6),
    ],
)
def test_keeps_the_most_recent_whole_exchanges_that_fit(
    max_chars: int, kept: list[Turn], dropped: int
) -> None:
    assert recent_turns(CONVERSATION, max_chars) == (kept, dropped)


def test_an_older_exchange_that_would_fit_is_not_kept_past_one_that_does_not() -> None:
    small_old = _exchange("x", "y")
    big = _exchange("z" * 50, "w" * 50)
    assert recent_turns([*small_old, *big, *NEW], 12 + 4 * T) == (NEW, 4)


def test_an_answer_with_several_turns_stays_with_its_question() -> None:
    exchange = [Turn("user", "q" * 5), Turn("assistant", "a" * 5), Turn("assistant", "b" * 5)]
    assert recent_turns([*exchange, *NEW], 24 + 5 * T) == (NEW, 3)
    assert recent_turns([*exchange, *NEW], 25 + 5 * T) == ([*exchange, *NEW], 0)


def test_no_turns_and_empty_limit() -> None:
    assert recent_turns([], 100) == ([], 0)
    assert recent_turns([], 0) == ([], 0)
    assert recent_turns(_exchange("", ""), 0) == ([], 2)  # 0 sends nothing at all


def test_many_tiny_turns_are_charged_their_overhead() -> None:
    empty = _exchange("", "") * 100
    assert recent_turns(empty, 10 * 2 * T) == (empty[-20:], 180)


@pytest.mark.parametrize("max_chars", [0, 100, 1_000, 5_000])
@pytest.mark.parametrize("content", ["", "x", "x" * 7, "x" * 200])
def test_the_kept_ascii_history_serialises_to_at_most_max_chars_bytes(
    max_chars: int, content: str
) -> None:
    kept, _ = recent_turns(_exchange(content, content) * 200, max_chars)
    assert _history_bytes(kept) <= max_chars


def _history_bytes(turns: list[Turn]) -> int:
    """What `turns` add to a ChatRequest's workflow input payload, in bytes."""
    converter = temporalio.converter.default().payload_converter
    (with_turns,) = converter.to_payloads([ChatRequest(prompt="", history=turns)])
    (without,) = converter.to_payloads([ChatRequest(prompt="")])
    return len(with_turns.data) - len(without.data)


# --- through the gateway ----------------------------------------------------------------

HISTORY_MAX_CHARS = 250
MAX_TOKENS = 4  # "[Simulated reply from the": 25 characters


@pytest.fixture(scope="module")
async def capped(stack: LocalStack) -> Any:
    """A gateway on the shared stack that sends at most HISTORY_MAX_CHARS of history."""
    process, url = stack.start_extra_gateway({"HISTORY_MAX_CHARS": str(HISTORY_MAX_CHARS)})
    try:
        yield process, url
    finally:
        process.stop()


async def test_the_workflow_input_keeps_only_the_newest_turns_that_fit(
    capped: Any, fleet: LocalStack, temporal_client: Client
) -> None:
    process, url = capped
    conversation_id = f"conv-cap-{uuid.uuid4().hex[:8]}"
    first = unique_prompt("first question, long enough to fill most of the budget " + "." * 40)
    second = unique_prompt("second question")
    third = unique_prompt("third question")

    async with httpx.AsyncClient(base_url=url, timeout=30, headers=auth_headers()) as gateway:

        async def turn(prompt: str) -> ChatRequest:
            response = await gateway.post(
                "/api/workflows/start",
                json={
                    "prompt": prompt,
                    "max_tokens": MAX_TOKENS,
                    "conversation_id": conversation_id,
                },
            )
            assert response.status_code == 202, response.text
            workflow_id = response.json()["workflow_id"]
            status = await wait_status(gateway, workflow_id, {"completed", "failed"})
            assert status["status"] == "completed", status
            return await _chat_request_of(temporal_client, workflow_id)

        first_request = await turn(first)
        second_request = await turn(second)
        third_request = await turn(third)

    first_answer = expected_answer(first, MAX_TOKENS)
    first_exchange = _exchange(first, first_answer)
    second_exchange = _exchange(
        second, expected_answer(second, MAX_TOKENS, history=_dicts(first_exchange))
    )
    first_chars = _charged(first_exchange)
    second_chars = _charged(second_exchange)
    assert first_chars <= HISTORY_MAX_CHARS < first_chars + second_chars  # the test's premise

    assert first_request.history == []
    assert second_request.history == first_exchange  # fits on its own: sent
    assert third_request.history == second_exchange  # the oldest exchange was left out

    logged = _json_lines(process.log_path.read_text())
    capped_lines = [
        line
        for line in logged
        if line.get("event") == "conversation history capped"
        and line.get("conversation_id") == conversation_id
    ]
    assert [line["turns_dropped"] for line in capped_lines] == [2]
    started = [
        line
        for line in logged
        if line.get("event") == "chat started"
        and line.get("workflow_id") == capped_lines[0]["workflow_id"]
    ]
    assert [line["history_turns"] for line in started] == [1]


async def _chat_request_of(client: Client, workflow_id: str) -> ChatRequest:
    """The ChatRequest the chat was started with: its workflow input, from the history."""
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        payloads = event.workflow_execution_started_event_attributes.input.payloads
        request: ChatRequest = (await client.data_converter.decode(payloads, [ChatRequest]))[0]
        return request
    raise LookupError(f"no history for {workflow_id}")


def _charged(turns: list[Turn]) -> int:
    """What `recent_turns` charges for `turns` against HISTORY_MAX_CHARS."""
    return sum(len(t.content) + TURN_OVERHEAD_CHARS for t in turns)


def _dicts(turns: list[Turn]) -> list[dict[str, str]]:
    return [{"role": t.role, "content": t.content} for t in turns]


def _json_lines(log: str) -> list[dict[str, Any]]:
    """The structlog lines of a process log (JSON), without anything else it printed."""
    lines = []
    for line in log.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            lines.append(value)
    return lines
