"""The UI's pure parts, without a browser: the live answer, reply markdown, the turn record."""

from __future__ import annotations

from ui.gateway_client import ChatEvent, WorkflowStatus
from ui.live_answer import LiveAnswer
from ui.rendering import (
    TemporalLinks,
    render_ended,
    render_rejected,
    render_running,
)
from ui.turn_record import METADATA_KEY, TurnRecord, unfinished_turns
from ui.turns import _reply_time

LINKS = TemporalLinks("http://localhost:8233/", "default")


def status(**fields: object) -> WorkflowStatus:
    return WorkflowStatus.from_json({"workflow_id": "chat-1", "status": "running", **fields})


def test_history_link_is_the_temporal_ui_workflow_page() -> None:
    url = LINKS.workflow_url("chat-1")
    assert url == "http://localhost:8233/namespaces/default/workflows/chat-1"


def event(seq: int, type_: str, **data: object) -> ChatEvent:
    return ChatEvent(id=seq, type=type_, data=data)


def answer_from(*events: ChatEvent) -> LiveAnswer:
    answer = LiveAnswer()
    for item in events:
        answer.apply(item)
    return answer


def test_live_text_grows_with_deltas_then_is_confirmed_by_chunks_in_any_order() -> None:
    answer = answer_from(
        event(1, "stage", stage="generating"),
        event(2, "delta", attempt=1, offset=0, text="Hello, "),
        event(3, "delta", attempt=1, offset=7, text="durable "),
    )
    assert answer.text == "Hello, durable "
    answer.apply(event(4, "delta", attempt=1, offset=15, text="world."))
    answer.apply(event(5, "stage", stage="checkpointing", total_chunks=3))
    # Chunk 1 before chunk 0: only the contiguous prefix counts as checkpointed, and
    # the shown text stays the same continuous answer throughout.
    answer.apply(event(6, "chunk", index=1, text="durable ", total=3))
    assert (answer.checkpointed, answer.text) == ("", "Hello, durable world.")
    answer.apply(event(7, "chunk", index=0, text="Hello, ", total=3))
    assert (answer.checkpointed, answer.text) == ("Hello, durable ", "Hello, durable world.")
    assert (answer.chunks_saved, round(answer.progress or 0)) == (2, 67)
    answer.apply(event(8, "chunk", index=2, text="world.", total=3))
    answer.apply(event(9, "completed", error=None))
    assert answer.checkpointed == answer.text == "Hello, durable world."
    assert (answer.outcome, answer.progress, answer.restarts) == ("completed", 100.0, 0)


def test_reset_drops_the_preview_so_no_text_shows_twice() -> None:
    answer = answer_from(
        event(1, "delta", attempt=1, offset=0, text="Hello, dur"),
        event(2, "reset", attempt=2, reason="The answer restarted (attempt 2)."),
    )
    assert answer.text == ""
    answer.apply(event(3, "delta", attempt=2, offset=0, text="Hello, durable world."))
    assert answer.text == "Hello, durable world."
    assert answer.restart_notes == ["The answer restarted (attempt 2)."]
    # A late delta of the interrupted attempt, or one out of place, changes nothing.
    answer.apply(event(4, "delta", attempt=1, offset=10, text="able"))
    answer.apply(event(5, "delta", attempt=2, offset=99, text="gap"))
    assert answer.text == "Hello, durable world."


def test_a_retry_that_reattached_continues_the_preview() -> None:
    # Resumable generations: attempt 2 re-attaches to the same generation and goes on
    # where the text viewers have ends, with no reset.
    answer = answer_from(
        event(1, "delta", attempt=1, offset=0, text="Hello, dur"),
        event(2, "delta", attempt=2, offset=10, text="able world."),
        event(3, "delta", attempt=1, offset=10, text="able"),  # the old worker, late
    )
    assert answer.text == "Hello, durable world."
    assert answer.restarts == 0


def test_running_reply_shows_the_answer_then_stage_and_progress() -> None:
    answer = answer_from(
        event(1, "delta", attempt=1, offset=0, text="Hello world"),
        event(2, "stage", stage="checkpointing", total_chunks=5),
        event(3, "chunk", index=0, text="Hel", total=5),
        event(4, "chunk", index=1, text="lo ", total=5),
    )
    text = render_running(answer, links=LINKS, workflow_id="chat-1")
    assert text.startswith("Hello world\n\n")
    assert "`checkpointing` `40%` `2/5 chunks saved`" in text
    assert "(http://localhost:8233/namespaces/default/workflows/chat-1)" in text
    assert render_running(LiveAnswer(), links=LINKS, workflow_id="chat-1").startswith("`queued`")


def test_running_reply_closes_an_open_code_fence_before_the_footer() -> None:
    answer = answer_from(event(1, "delta", attempt=1, offset=0, text="```python\nprint(1)"))
    text = render_running(answer, links=LINKS, workflow_id="chat-1")
    assert text.startswith("```python\nprint(1)\n```\n\n")


def test_restart_and_gateway_trouble_are_sentences() -> None:
    answer = answer_from(
        event(1, "delta", attempt=1, offset=0, text="Hel"),
        event(2, "reset", attempt=2, reason="The answer restarted (attempt 2)."),
    )
    text = render_running(answer, links=LINKS, workflow_id="chat-1", problem="It is down.")
    assert text.startswith("↻ *The answer restarted (attempt 2).*\n\n`queued`")
    assert "**Gateway unreachable, retrying**: It is down." in text


def completed_answer(text: str) -> LiveAnswer:
    return answer_from(
        event(1, "chunk", index=0, text=text, total=1), event(2, "completed", error=None)
    )


def test_completed_reply_has_badges_only_for_fields_present() -> None:
    done = status(status="completed", stage="completed", duration_ms=4200,
                  usage={"prompt_tokens": 12, "completion_tokens": 30})  # fmt: skip
    text = render_ended(completed_answer("The answer."), done, links=LINKS, workflow_id="chat-1")
    assert text.startswith("The answer.\n\n`fresh` `4.2 s` `42 tokens (12 in, 30 out)` [Temporal")
    assert "$" not in text
    with_cost = status(status="completed", cost_usd=0.00042)
    assert "`~$0.0004 estimated`" in render_ended(
        LiveAnswer(), with_cost, links=LINKS, workflow_id="chat-1"
    )
    hit = status(status="completed", cache_hit=True, saved_usd=0.00042, saved_ms=8100, cost_usd=0)
    rendered = render_ended(LiveAnswer(), hit, links=LINKS, workflow_id="chat-1")
    assert "`cache hit`" in rendered and "`saved $0.0004 and 8.1 s`" in rendered
    assert "estimated" not in rendered
    # Without a status (gateway gone at the very end) the answer still ends cleanly.
    restarted = answer_from(
        event(1, "reset", attempt=2, reason="again"),
        event(2, "chunk", index=0, text="The answer.", total=1),
        event(3, "completed", error=None),
    )
    bare = render_ended(restarted, None, links=LINKS, workflow_id="chat-1")
    assert bare.startswith("The answer.\n\n`restarted once` [Temporal history")


def test_cancelled_and_failed_replies_say_what_happened() -> None:
    cancelled_answer = answer_from(
        event(1, "delta", attempt=1, offset=0, text="Half an answer, not saved"),
        event(2, "chunk", index=0, text="Half an", total=3),
        event(3, "cancelled", error="The chat was cancelled."),
    )
    cancelled = render_ended(cancelled_answer, None, links=LINKS, workflow_id="chat-1")
    assert cancelled.startswith("Half an\n\n**Stopped** before the answer began")
    stopped_answer = answer_from(
        event(1, "delta", attempt=1, offset=0, text="Half an answer"),
        event(2, "stopping", by="user"),
        event(3, "delta", attempt=1, offset=14, text=", written after the stop"),
        event(4, "chunk", index=0, text="Half an answer", total=1),
        event(5, "stopped", error=None),
    )
    assert stopped_answer.preview == "Half an answer"  # frozen at the stop
    stopped = render_ended(stopped_answer, None, links=LINKS, workflow_id="chat-1")
    assert stopped.startswith("Half an answer\n\n*Stopped: the answer is kept as it was")
    failed_answer = answer_from(event(1, "failed", error="The provider is down."))
    failed = render_ended(failed_answer, None, links=LINKS, workflow_id="chat-1")
    assert failed.startswith("**The answer failed**: The provider is down.")
    terminated = render_ended(LiveAnswer(), status(status="terminated"), links=LINKS,
                              workflow_id="chat-1")  # fmt: skip
    assert terminated.startswith(
        "**Terminated**: the workflow was stopped in Temporal (nothing was saved)"
    )
    timed_out = render_ended(
        LiveAnswer(), status(status="timed_out", error="Timed out: too long."),
        links=LINKS, workflow_id="chat-1",
    )  # fmt: skip
    assert timed_out.startswith("**Timed out**: Timed out: too long. (nothing was saved)")
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


def test_a_reply_is_stamped_after_its_parent_step() -> None:
    # Chainlit lists a thread's steps by start time (to the millisecond) when it
    # rebuilds a page, and drops a reply listed before its parent step.
    assert _reply_time("2999-01-01T00:00:00.000400Z") == "2999-01-01T00:00:00.002400Z"
    assert _reply_time("2000-01-01T00:00:00.000000Z") > "2026"
    assert _reply_time(None) > "2026"
