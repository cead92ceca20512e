"""What Temporal alone costs for the checkpoint phase's shape: the floor under
bench/concurrency.py.

`FloorWorkflow` runs `chunks` activities that do nothing (`noop_chunk`), at most
`window` in flight, scheduled in ascending order, with the timeouts of `save_chunk` —
the shape of `ChatStreamingWorkflow._save_chunks` without PostgreSQL, without the LLM,
without the gateway. bench/concurrency.py runs as many of them as it runs chats, on
the same dev server, with as many worker processes as the stack has (sandboxed and
tuned like worker.py). The activities per second it reaches bound the chunk
checkpoints per second of any design keeping one (regular) activity per chunk on this
server and machine. With `local`, the same with local activities: they run inside the
workflow task on the worker that holds it and are recorded as markers, without the
server dispatching each one — the alternative the checkpoint phase does not take
(docs/benchmarks.md says why).

`FirstActivityWorkflow` is the shape of a chat up to its LLM call (bench/load.py's
floor): two no-op local activities in the first workflow task, as a chat records its
stage and validates its prompt there, then the regular activity that would call the
provider, which returns the wall-clock time it started. Started N at once, start sent
-> that time is what Temporal alone adds before a first token can exist.

The worker is a child process, so its CPU is measured alone:

    python -m bench.temporal_floor --address HOST:PORT --task-queue QUEUE
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    from testing.stack import ROOT, LocalStack
    from workflows import policies


@dataclass
class FloorRun:
    chunks: int
    window: int
    local: bool = False  # local activities: run inside the workflow task, no dispatch


@activity.defn(name="noop_chunk")
async def noop_chunk(index: int) -> int:
    return index


@workflow.defn(name="FloorWorkflow")
class FloorWorkflow:
    @workflow.run
    async def run(self, spec: FloorRun) -> int:
        window = asyncio.Semaphore(max(1, spec.window))

        async def one(index: int) -> int:
            async with window:
                if spec.local:
                    return await workflow.execute_local_activity(
                        noop_chunk,
                        index,
                        start_to_close_timeout=policies.SAVE_CHUNK_TIMEOUT,
                        retry_policy=policies.SAVE_CHUNK_RETRY,
                    )
                return await workflow.execute_activity(
                    noop_chunk,
                    index,
                    start_to_close_timeout=policies.SAVE_CHUNK_TIMEOUT,
                    retry_policy=policies.SAVE_CHUNK_RETRY,
                )

        done = await asyncio.gather(*(one(i) for i in range(spec.chunks)))
        return len(done)


@activity.defn(name="noop_record")
async def noop_record(stage: str) -> str:
    return stage


@activity.defn(name="stamp_start")
async def stamp_start() -> float:
    return time.time()


@workflow.defn(name="FirstActivityWorkflow")
class FirstActivityWorkflow:
    @workflow.run
    async def run(self) -> float:
        for stage in ("validating", "generating"):
            await workflow.execute_local_activity(
                noop_record, stage, start_to_close_timeout=policies.VALIDATE_TIMEOUT
            )
        return await workflow.execute_activity(
            stamp_start,
            start_to_close_timeout=policies.GENERATE_TIMEOUT,
            heartbeat_timeout=policies.GENERATE_HEARTBEAT_TIMEOUT,
            retry_policy=policies.GENERATE_RETRY,
        )


@contextlib.asynccontextmanager
async def floor_workers(stack: LocalStack) -> AsyncIterator[tuple[str, dict[str, int]]]:
    """As many floor worker processes as the stack has live workers, on a task queue of
    their own: yields the queue and the pids to sample (the workers and the server).
    Stops only the processes it started."""
    task_queue = f"bench-floor-{uuid.uuid4().hex[:8]}"
    children: list[asyncio.subprocess.Process] = []
    try:
        for _ in stack.live_workers():
            children.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "bench.temporal_floor",
                    "--address",
                    stack.temporal_address,
                    "--task-queue",
                    task_queue,
                    cwd=ROOT,
                    stdout=asyncio.subprocess.PIPE,
                )
            )

        async def started(child: asyncio.subprocess.Process) -> None:
            assert child.stdout is not None
            line = await asyncio.wait_for(child.stdout.readline(), 60)
            if line.strip() != b"floor worker started":
                raise RuntimeError(f"a floor worker did not start (exit {child.returncode})")

        await asyncio.gather(*(started(child) for child in children))  # they start together
        roots = {f"floor-worker-{i + 1}": c.pid for i, c in enumerate(children)}
        if stack.temporal is not None:
            roots["temporal"] = stack.temporal.pid
        yield task_queue, roots
    finally:
        for child in children:
            if child.returncode is None:
                child.kill()
            await child.wait()


async def run_worker(address: str, task_queue: str) -> None:
    # The chat worker's tuning, so the floor differs from it only in what activities do.
    from common.contract import STICKY_SCHEDULE_TO_START
    from common.settings import Settings

    settings = Settings()
    client = await Client.connect(address)
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=[FloorWorkflow, FirstActivityWorkflow],
        activities=[noop_chunk, noop_record, stamp_start],
        max_concurrent_activities=settings.worker_max_concurrent_activities,
        max_concurrent_workflow_tasks=settings.worker_max_concurrent_workflow_tasks,
        sticky_queue_schedule_to_start_timeout=STICKY_SCHEDULE_TO_START,
    )
    print("floor worker started", flush=True)
    await worker.run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", required=True)
    parser.add_argument("--task-queue", required=True)
    args = parser.parse_args()
    try:
        asyncio.run(run_worker(args.address, args.task_queue))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
