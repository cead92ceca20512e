"""The UI's pure parts, without a browser: reply markdown and the turn record."""

from __future__ import annotations

from ui.gateway_client import WorkflowStatus
from ui.rendering import (
    TemporalLinks,
    render_ended,
    render_rejected,
    render_running,
)
from ui.turn_record import METADATA_KEY, TurnRecord, unfinished_turns

LINKS = TemporalLinks("http://localhost:8233/", "default")


def status(**fields: object) -> WorkflowStatus:
    return WorkflowStatus.from_json({"workflow_id": "chat-1", "status": "running", **fields})


def test_history_link_is_the_temporal_ui_workflow_page() -> None:
    url = LINKS.workflow_url("chat-1")
    assert url == "http://localhost:8233/namespaces/default/workflows/chat-1"


def test_running_reply_shows_the_answer_then_stage_and_progress() -> None:
    text = render_running(
        "Hello",
        status(stage="checkpointing", progress=40, chunks_saved=2, total_chunks=5),
        links=LINKS,
        workflow_id="chat-1",
    )
    assert text.startswith("Hello\n\n")
    assert "`checkpointing` `40%` `2/5 chunks saved`" in text
    assert "(http://localhost:8233/namespaces/default/workflows/chat-1)" in text


def test_running_reply_closes_an_open_code_fence_before_the_footer() -> None:
    text = render_running("```python\nprint(1)", status(stage="generating"), links=LINKS,
                          workflow_id="chat-1")  # fmt: skip
    assert text.startswith("```python\nprint(1)\n```\n\n")


def test_provider_trouble_is_a_sentence() -> None:
    text = render_running(
        "", status(stage="generating", error="The LLM provider answered 500"), links=LINKS,
        workflow_id="chat-1",
    )  # fmt: skip
    assert "**Trouble, retrying**: The LLM provider answered 500" in text


def test_completed_reply_has_badges_only_for_fields_present() -> None:
    done = status(status="completed", stage="completed", duration_ms=4200,
                  usage={"prompt_tokens": 12, "completion_tokens": 30})  # fmt: skip
    text = render_ended("The answer.", done, links=LINKS)
    assert text.startswith("The answer.\n\n`4.2 s` `42 tokens (12 in, 30 out)` [Temporal")
    assert "$" not in text
    with_cost = status(status="completed", cost_usd=0.00042)
    assert "`~$0.0004 estimated`" in render_ended("", with_cost, links=LINKS)


def test_cancelled_and_failed_replies_say_what_happened() -> None:
    cancelled = render_ended("Half an", status(status="cancelled"), links=LINKS)
    assert cancelled.startswith("Half an\n\n**Stopped**: the workflow was cancelled")
    failed = render_ended("", status(status="failed", error="The provider is down."),
                          links=LINKS)  # fmt: skip
    assert failed.startswith("**The answer failed**: The provider is down.")
    assert render_rejected("The prompt is empty.").endswith("The prompt is empty.")


def test_turn_record_round_trips_through_message_metadata() -> None:
    record = TurnRecord(prompt_message_id="m-1", workflow_id="chat-1", state="running")
    assert TurnRecord.from_metadata(record.to_metadata()) == record
    assert TurnRecord.from_metadata({}) is None
    assert TurnRecord.from_metadata({"other": 1}) is None


def test_unfinished_turns_pair_each_open_reply_with_its_prompt() -> None:
    steps = [
        {"id": "u1", "type": "user_message", "output": "first"},
        {"id": "r1", "type": "assistant_message", "output": "done",
         "metadata": {METADATA_KEY: {"prompt_message_id": "u1", "workflow_id": "w1",
                                     "state": "done"}}},
        {"id": "u2", "type": "user_message", "output": "second"},
        {"id": "r2", "type": "assistant_message", "output": "half",
         "metadata": {METADATA_KEY: {"prompt_message_id": "u2", "workflow_id": None,
                                     "state": "starting"}}},
        {"id": "x", "type": "assistant_message", "output": "Task manually stopped.",
         "metadata": {}},
    ]  # fmt: skip
    [turn] = unfinished_turns(steps)
    assert turn.reply["id"] == "r2"
    assert turn.prompt == "second"
    assert turn.record == TurnRecord(prompt_message_id="u2", workflow_id=None, state="starting")
