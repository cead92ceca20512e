"""Measure checkpoint throughput and history sizes on this machine (for docs/capacity.md).

Starts its own stack on free ports with `testing.stack.LocalStack` (embedded
PostgreSQL, `temporal server start-dev`, the LLM simulator, N workers; no gateway),
runs a bounded batch of chats straight through Temporal, reads every history back
and prints one JSON document. Every process it started is stopped by pid at the end.

    .venv/bin/python deploy/capacity/measure.py --workers 1 --chats 12 --max-tokens 2000

What it reports:
- `save_chunk_per_s`: save_chunk activities completed per second across the fleet,
  between the first save_chunk scheduled and the last one completed (the
  checkpointing phase of the batch; generation is made near-instant on purpose);
- per chat: events, history bytes (protobuf), largest single payload, chunks;
- CPU seconds used by each process during the batch (where the 2 cores went).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from temporalio.api.enums.v1 import EventType  # noqa: E402
from temporalio.client import Client, WorkflowHistory  # noqa: E402

from bench.sampler import tree_cpu  # noqa: E402
from bench.stats import percentile_ms  # noqa: E402
from common.models import ChatRequest  # noqa: E402
from testing.chats import start_chat_directly  # noqa: E402
from testing.machine import machine_info  # noqa: E402
from testing.stack import LocalStack, ManagedProcess  # noqa: E402

# Generation as fast as the simulator goes: the batch then measures checkpointing.
FAST_SIMULATOR = {"SIM_TTFT_MS": "0", "SIM_TOKENS_PER_SECOND": "1000000"}
TASK_QUEUE = "chat-queue"


@dataclass
class ChatFigures:
    workflow_id: str
    events: int
    history_bytes: int
    largest_payload_bytes: int
    save_chunks: int
    first_save_scheduled: float
    last_save_completed: float
    event_types: dict[str, int] = field(default_factory=dict)
    # save_chunk: scheduled -> started (waiting in the task queue), started -> completed
    save_queue_wait_s: list[float] = field(default_factory=list)
    save_run_s: list[float] = field(default_factory=list)
    # workflow tasks: scheduled -> started, started -> completed
    wft_queue_wait_s: list[float] = field(default_factory=list)
    wft_run_s: list[float] = field(default_factory=list)


def _ts(event: Any) -> float:
    return float(event.event_time.seconds) + float(event.event_time.nanos) / 1e9


def _payload_sizes(event: Any) -> list[int]:
    """Sizes in bytes of the payloads a history event carries."""
    sizes: list[int] = []

    def walk(message: Any) -> None:
        for descriptor, value in message.ListFields():
            if descriptor.message_type is None:
                continue
            name = descriptor.message_type.full_name
            values = value if descriptor.is_repeated else [value]
            for item in values:
                if name == "temporal.api.common.v1.Payload":
                    sizes.append(item.ByteSize())
                elif hasattr(item, "ListFields"):
                    walk(item)

    walk(event)
    return sizes


def chat_figures(history: WorkflowHistory) -> ChatFigures:
    events = list(history.events)
    save_scheduled: dict[int, float] = {}
    save_started: dict[int, float] = {}
    save_completed: list[float] = []
    wft_scheduled: dict[int, float] = {}
    wft_started: dict[int, float] = {}
    figures_lists: dict[str, list[float]] = {
        "save_queue": [],
        "save_run": [],
        "wft_queue": [],
        "wft_run": [],
    }
    types: dict[str, int] = {}
    largest = 0
    for event in events:
        kind = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
        types[kind] = types.get(kind, 0) + 1
        largest = max([largest, *_payload_sizes(event)])
        at = _ts(event)
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            if attrs.activity_type.name == "save_chunk":
                save_scheduled[event.event_id] = at
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            scheduled_id = event.activity_task_started_event_attributes.scheduled_event_id
            if scheduled_id in save_scheduled:
                save_started[scheduled_id] = at
                figures_lists["save_queue"].append(at - save_scheduled[scheduled_id])
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            scheduled_id = event.activity_task_completed_event_attributes.scheduled_event_id
            if scheduled_id in save_scheduled:
                save_completed.append(at)
                if scheduled_id in save_started:
                    figures_lists["save_run"].append(at - save_started[scheduled_id])
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
            wft_scheduled[event.event_id] = at
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            scheduled_id = event.workflow_task_started_event_attributes.scheduled_event_id
            wft_started[event.event_id] = at
            if scheduled_id in wft_scheduled:
                figures_lists["wft_queue"].append(at - wft_scheduled[scheduled_id])
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            started_id = event.workflow_task_completed_event_attributes.started_event_id
            if started_id in wft_started:
                figures_lists["wft_run"].append(at - wft_started[started_id])
    return ChatFigures(
        workflow_id=history.workflow_id,
        events=len(events),
        history_bytes=sum(e.ByteSize() for e in events),
        largest_payload_bytes=largest,
        save_chunks=len(save_completed),
        first_save_scheduled=min(save_scheduled.values(), default=0.0),
        last_save_completed=max(save_completed, default=0.0),
        event_types=types,
        save_queue_wait_s=figures_lists["save_queue"],
        save_run_s=figures_lists["save_run"],
        wft_queue_wait_s=figures_lists["wft_queue"],
        wft_run_s=figures_lists["wft_run"],
    )


def percentiles(values: list[float]) -> dict[str, float]:
    """Median and 95th percentile, in milliseconds."""
    if not values:
        return {}
    return {"p50_ms": percentile_ms(values, 50), "p95_ms": percentile_ms(values, 95)}


def cpu_seconds(process: ManagedProcess) -> float:
    """User + system CPU seconds of a process and its descendants so far, each with its
    children that have exited (PostgreSQL backends, for one)."""
    return sum((cpu for _, cpu in tree_cpu(process.pid, reaped=True)), 0.0)


async def run_batch(stack: LocalStack, chats: int, max_tokens: int) -> dict[str, Any]:
    client = await Client.connect(stack.temporal_address)
    run = uuid.uuid4().hex[:8]
    before = {p.name: cpu_seconds(p) for p in stack.processes}
    started = time.monotonic()
    handles = [
        await start_chat_directly(
            client,
            ChatRequest(prompt=f"capacity batch {run} chat {i}", max_tokens=max_tokens),
            task_queue=TASK_QUEUE,
        )
        for i in range(chats)
    ]
    results = await asyncio.wait_for(
        asyncio.gather(*(h.result(rpc_timeout=None) for h in handles)), timeout=600
    )
    wall = time.monotonic() - started
    after = {p.name: cpu_seconds(p) for p in stack.processes}
    figures = [chat_figures(await h.fetch_history()) for h in handles]
    saves = sum(f.save_chunks for f in figures)
    window = max(f.last_save_completed for f in figures) - min(
        f.first_save_scheduled for f in figures
    )
    per_chat_rates = [
        f.save_chunks / (f.last_save_completed - f.first_save_scheduled)
        for f in figures
        if f.last_save_completed > f.first_save_scheduled
    ]
    load_after = [round(x, 2) for x in os.getloadavg()]
    return {
        "loadavg_after_1_5_15": load_after,
        "chats": chats,
        "max_tokens": max_tokens,
        "chunks_per_chat": sorted({r.total_chunks for r in results}),
        "text_chars_per_chat": sorted({r.text_chars for r in results}),
        "wall_s": round(wall, 2),
        "save_chunk_total": saves,
        "save_window_s": round(window, 2),
        "save_chunk_per_s": round(saves / window, 1) if window > 0 else None,
        "per_chat_save_chunk_per_s_median": (
            round(sorted(per_chat_rates)[len(per_chat_rates) // 2], 1) if per_chat_rates else None
        ),
        "events_per_chat": sorted({f.events for f in figures}),
        "history_bytes_per_chat_max": max(f.history_bytes for f in figures),
        "largest_payload_bytes": max(f.largest_payload_bytes for f in figures),
        "event_types_first_chat": figures[0].event_types,
        "save_chunk_queue_wait": percentiles([x for f in figures for x in f.save_queue_wait_s]),
        "save_chunk_run": percentiles([x for f in figures for x in f.save_run_s]),
        "workflow_task_queue_wait": percentiles([x for f in figures for x in f.wft_queue_wait_s]),
        "workflow_task_run": percentiles([x for f in figures for x in f.wft_run_s]),
        "cpu_seconds": {name: round(after[name] - before.get(name, 0.0), 1) for name in after},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--chats", type=int, default=12)
    parser.add_argument("--max-tokens", type=int, default=2000)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="durable-chat-capacity-"))
    stack = LocalStack(workdir=workdir, simulator_env=FAST_SIMULATOR)
    command = " ".join([Path(sys.executable).name, *sys.argv])
    report: dict[str, Any] = {
        "machine": machine_info(),
        "command": command,
        "workers": args.workers,
    }
    try:
        stack.start_postgres()
        stack.start_temporal()
        stack.start_simulator()
        for _ in range(args.workers):
            stack.start_worker()
        report["batch"] = asyncio.run(run_batch(stack, args.chats, args.max_tokens))
    except BaseException:
        for process in stack.processes:
            print(f"--- {process.name}", file=sys.stderr)
            print(process.log_tail(30), file=sys.stderr)
        raise
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
