"""kill -9 of the worker that is saving chunks: another worker replays and finishes."""

from __future__ import annotations

import itertools

from temporalio.client import Client

from common.models import ChatRequest
from testing.chats import chunk_rows, generations_for, start_chat_directly, wait_for
from testing.oracle import expected_answer, unique_prompt
from testing.stack import LocalStack
from testing.workers import worker_process
from tests.helpers import keep_history


async def test_kill_9_mid_checkpoint_resumes_without_loss_or_duplicates(
    fleet: LocalStack, temporal_client: Client, db, simulator
) -> None:
    prompt = unique_prompt("A long answer, please")
    max_tokens = 400
    # Tiny chunks saved one at a time make the checkpoint phase long enough to kill into.
    request = ChatRequest(
        prompt=prompt, max_tokens=max_tokens, chunk_target_chars=8, checkpoint_window=1
    )
    handle = await start_chat_directly(temporal_client, request)

    async def twenty_saved():  # type: ignore[no-untyped-def]
        rows = await chunk_rows(db, handle.id)
        return rows if len(rows) >= 20 else None

    before = await wait_for(twenty_saved, timeout_s=60, interval_s=0.05)
    victim_identity = before[-1]["worker"]
    victim = worker_process(fleet, victim_identity)
    assert victim is not None, victim_identity
    killed_at = await db.fetchval("SELECT clock_timestamp()")
    victim.kill()  # SIGKILL: no graceful shutdown, no chance to report anything
    saved_at_kill = len(await chunk_rows(db, handle.id))

    result = await handle.result(rpc_timeout=None)
    rows = await chunk_rows(db, handle.id)

    # Checkpointing went on quickly (measured exactly by bench/recovery.py; loose here).
    times = [killed_at] + [
        r["created_at"]
        for r in await db.fetch(
            "SELECT created_at FROM chunks WHERE workflow_id = $1 AND created_at > $2 "
            "ORDER BY created_at",
            handle.id,
            killed_at,
        )
    ]
    longest_stall = max((b - a).total_seconds() for a, b in itertools.pairwise(times))
    assert longest_stall < 5, f"checkpointing stalled {longest_stall:.1f} s after the kill"

    # Every chunk exactly once (the primary key forbids duplicates; no gap either).
    assert [r["idx"] for r in rows] == list(range(result.total_chunks))
    assert result.total_chunks > saved_at_kill + 20
    assert "".join(r["text"] for r in rows) == expected_answer(prompt, max_tokens)
    # The LLM was called once: generation had finished before the crash.
    assert await generations_for(simulator, prompt) == {"started": 1, "completed": 1}
    # After the crash (allowing for the chunk in flight at the kill) only survivors wrote.
    workers = {r["worker"] for r in rows}
    assert len(workers) >= 2 and victim_identity in workers
    assert all(r["worker"] != victim_identity for r in rows[saved_at_kill + 1 :])
    # A survivor replayed the history and says where it resumed.
    survivors_logs = "".join(w.log_tail(2000) for w in fleet.workers if w is not victim)
    assert "replayed history; resuming at" in survivors_logs
    await keep_history(handle, "worker-killed-mid-checkpoint")
