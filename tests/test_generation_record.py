"""The generation row and its event log when `record_generation` updates arrive out of
order: a record still running on a worker when its chat was cancelled finishes last."""

from __future__ import annotations

import uuid

import asyncpg

from common.models import GenerationUpdate, Stage
from storage import ChatStore


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
