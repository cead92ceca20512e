"""Determinism guard: recorded histories must replay on the current workflow code.

`tests/histories/*.json` are histories of real runs (completed, failed, cancelled, a
worker killed mid-checkpoint), recorded with `UPDATE_HISTORIES=1 make test`. A change
to `workflows/` that would break chats already running fails here, in CI.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowHistory
from temporalio.worker import Replayer

from common.codec import data_converter
from common.models import ChatRequest
from testing.chats import start_chat, start_chat_directly, wait_for, wait_status
from testing.keys import test_codec
from testing.oracle import unique_prompt
from testing.simulator import simulator_fault, simulator_pace
from testing.sse import read_sse
from tests.helpers import HISTORIES_DIR, keep_history
from workflows.chat import ChatStreamingWorkflow
from workflows.reconcile import ReconcileChatsWorkflow
from workflows.retention import PurgeExpiredResponsesWorkflow


async def _replay(histories: list[WorkflowHistory]) -> None:
    async def each() -> AsyncIterator[WorkflowHistory]:
        for history in histories:
            yield history

    # With the suite's codec: fresh histories are encrypted; recorded ones (written in
    # clear, or encrypted with the fixed test keys) replay through it unchanged.
    replayer = Replayer(
        workflows=[ChatStreamingWorkflow, ReconcileChatsWorkflow, PurgeExpiredResponsesWorkflow],
        data_converter=data_converter(test_codec()),
    )
    results = await replayer.replay_workflows(each(), raise_on_replay_failure=False)
    failures = {run_id: str(err) for run_id, err in results.replay_failures.items()}
    assert failures == {}


async def _shown(gateway, workflow_id: str) -> bool:  # type: ignore[no-untyped-def]
    events = await read_sse(gateway, workflow_id, stop_after=6)
    return any(e["event"] == "delta" for e in events)


async def test_recorded_histories_replay() -> None:
    files = sorted(HISTORIES_DIR.glob("*.json"))
    assert len(files) >= 4, "recorded histories are missing from tests/histories/"
    await _replay([WorkflowHistory.from_json(f.stem, f.read_text()) for f in files])


async def test_fresh_histories_replay(temporal_client: Client, gateway, simulator) -> None:
    """Completed, failed, cancelled (before any text) and stopped (mid-answer) runs of
    this session replay cleanly too."""
    completed = await start_chat(gateway, prompt=unique_prompt(), max_tokens=80)
    await wait_status(gateway, completed, {"completed"})
    # the provider stalls before its first token: a cancel with nothing shown
    async with simulator_fault(simulator, fault="stall", count=1, after_tokens=0, stall_s=30):
        cancelled = await start_chat(gateway, prompt=unique_prompt(), max_tokens=1000)
        await wait_status(gateway, cancelled, {"running"})
        await gateway.post(f"/api/workflows/{cancelled}/cancel")
        await wait_status(gateway, cancelled, {"cancelled"}, timeout_s=30)
    async with simulator_pace(simulator, 100):  # seconds of generation: time to stop it
        stopped = await start_chat(gateway, prompt=unique_prompt(), max_tokens=1000)
        await wait_for(lambda: _shown(gateway, stopped), timeout_s=30)
        await gateway.post(f"/api/workflows/{stopped}/cancel")
        await wait_status(gateway, stopped, {"stopped"}, timeout_s=30)
    failed = await start_chat_directly(temporal_client, ChatRequest(prompt=""))
    with pytest.raises(WorkflowFailureError):
        await failed.result()

    handles = {
        "completed": temporal_client.get_workflow_handle(completed),
        "cancelled": temporal_client.get_workflow_handle(cancelled),
        "stopped-mid-answer": temporal_client.get_workflow_handle(stopped),
        "invalid-prompt": failed,
    }
    for name, handle in handles.items():
        await keep_history(handle, name)
        await _replay([await handle.fetch_history() for handle in handles.values()])
