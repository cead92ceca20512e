"""The generation row and its event log when `record_generation` updates arrive out of
order: a record still running on a worker when its chat was cancelled finishes last."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from common.models import GenerationUpdate, Stage
from storage import ChatStore
from storage.chats import ChunkConflictError


async def _events(db: asyncpg.Pool, workflow_id: str) -> list[tuple[str, str | None]]:
    rows = await db.fetch(
        "SELECT type, data->>'stage' AS stage FROM chat_events WHERE workflow_id = $1 ORDER BY seq",
        workflow_id,
    )
    return [(r["type"], r["stage"]) for r in rows]


async def test_a_late_record_of_an_earlier_stage_does_not_undo_cancelled(db: asyncpg.Pool) -> None:
    store = ChatStore(db)
    workflow_id = f"chat-test-{uuid.uuid4()}"
    await store.record_generation(
        GenerationUpdate(workflow_id, Stage.CANCELLED, error="The chat was cancelled.")
    )
    await store.record_generation(  # the first record, overtaken by the cancellation
        GenerationUpdate(workflow_id, Stage.VALIDATING, user_id="alice", prompt="Hello", model="m")
    )

    row = await db.fetchrow(
        "SELECT stage, user_id, prompt, model, error, completed_at FROM generations "
        "WHERE workflow_id = $1",
        workflow_id,
    )
    assert row["stage"] == "cancelled"
    assert (row["user_id"], row["prompt"], row["model"]) == ("alice", "Hello", "m")
    assert row["error"] == "The chat was cancelled." and row["completed_at"] is not None
    assert await _events(db, workflow_id) == [("stage", "cancelled"), ("cancelled", None)]


async def test_records_in_order_log_every_stage_once(db: asyncpg.Pool) -> None:
    store = ChatStore(db)
    workflow_id = f"chat-test-{uuid.uuid4()}"
    for stage in (Stage.VALIDATING, Stage.GENERATING, Stage.GENERATING, Stage.COMPLETED):
        await store.record_generation(GenerationUpdate(workflow_id, stage, user_id="alice"))

    assert await _events(db, workflow_id) == [
        ("stage", "validating"),
        ("stage", "generating"),
        ("stage", "completed"),
        ("completed", None),
    ]


async def test_a_different_text_for_a_saved_chunk_is_an_error_naming_the_chat(
    db: asyncpg.Pool,
) -> None:
    store = ChatStore(db)
    workflow_id = f"chat-test-{uuid.uuid4()}"
    await store.record_generation(GenerationUpdate(workflow_id, Stage.CHECKPOINTING), run_id="r1")
    assert await store.insert_chunk(workflow_id, 0, "Hello", "w", 1, 2, run_id="r1")
    assert not await store.insert_chunk(workflow_id, 0, "Hello", "w", 2, 2, run_id="r1")
    with pytest.raises(ChunkConflictError, match=workflow_id):
        await store.insert_chunk(workflow_id, 0, "Goodbye", "w", 3, 2, run_id="r1")
    assert [c.text for c in await store.get_chunks(workflow_id, 0)] == ["Hello"]


async def test_a_newer_run_takes_the_chat_over_and_an_older_one_is_ignored(
    db: asyncpg.Pool,
) -> None:
    current = {"run": "r1"}

    async def current_run(_workflow_id: str) -> str | None:
        return current["run"]

    store = ChatStore(db, current_run=current_run)
    workflow_id = f"chat-test-{uuid.uuid4()}"
    await store.record_generation(GenerationUpdate(workflow_id, Stage.VALIDATING), run_id="r1")
    await store.record_generation(GenerationUpdate(workflow_id, Stage.CHECKPOINTING), run_id="r1")
    await store.insert_chunk(workflow_id, 0, "Old ", "w", 1, 2, run_id="r1")
    await store.insert_chunk(workflow_id, 1, "answer", "w", 1, 2, run_id="r1")
    await store.record_generation(GenerationUpdate(workflow_id, Stage.COMPLETED), run_id="r1")

    current["run"] = "r2"  # an operator reset the chat to before generation
    await store.record_generation(GenerationUpdate(workflow_id, Stage.GENERATING), run_id="r2")
    assert await store.get_chunks(workflow_id, 0) == [], "the old answer is not served"
    # A late write of the old run changes nothing.
    assert not await store.insert_chunk(workflow_id, 0, "Old ", "w", 2, 2, run_id="r1")
    await store.record_generation(GenerationUpdate(workflow_id, Stage.CHECKPOINTING), run_id="r2")
    assert await store.insert_chunk(workflow_id, 0, "New answer", "w", 1, 1, run_id="r2")
    await store.record_generation(GenerationUpdate(workflow_id, Stage.COMPLETED), run_id="r2")

    assert [c.text for c in await store.get_chunks(workflow_id, 0)] == ["New answer"]
    row = await store.get_generation(workflow_id)
    assert row is not None and row.stage is Stage.COMPLETED and row.chunks_saved == 1
    assert (row.run_id, row.answer_run_id) == ("r2", "r2")
    events = await _events(db, workflow_id)
    reset_at = events.index(("reset", None))
    assert events[reset_at - 2 :] == [
        ("stage", "completed"),
        ("completed", None),
        ("reset", None),
        ("stage", "generating"),
        ("stage", "checkpointing"),
        ("chunk", None),
        ("stage", "completed"),
        ("completed", None),
    ]


async def test_no_live_text_after_the_end_of_a_chat(db: asyncpg.Pool) -> None:
    """A generation outlives its terminated chat until its next heartbeat: its deltas
    must not follow the terminal event."""
    store = ChatStore(db)
    workflow_id = f"chat-test-{uuid.uuid4()}"
    await store.record_generation(GenerationUpdate(workflow_id, Stage.GENERATING), run_id="r1")
    await store.append_event(workflow_id, "delta", {"attempt": 1, "offset": 0, "text": "Hi"}, "r1")
    closed = await store.close_run(
        workflow_id, "r1", Stage.TERMINATED, "Terminated by an operator: x", "Terminated"
    )
    assert closed
    with pytest.raises(LookupError):
        await store.append_event(
            workflow_id, "delta", {"attempt": 1, "offset": 2, "text": " there"}, "r1"
        )
    events = await _events(db, workflow_id)
    assert events[-2:] == [("stage", "terminated"), ("terminated", None)]
