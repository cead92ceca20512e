"""The faults: how each one is injected, and how the harness plays the supervisor."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import time
from collections.abc import Callable

from chaos.harness import (
    FaultContext,
    FaultRecord,
    Scenario,
    generating_worker,
    probe_status_until,
    workflow_holder,
)
from chaos.operator import after_reset, after_terminate, operator_reset, operator_terminate


async def client_reconnect(ctx: FaultContext) -> FaultRecord:
    """Every client still following a chat drops its connection (F5) and reconnects with
    Last-Event-ID after a pause of 0.1-1 s."""
    record = FaultRecord("client-disconnect", time.time())
    pauses = []
    for run in ctx.unfinished():
        assert run.follower is not None
        pause = round(ctx.rng.uniform(0.1, 1.0), 3)
        if run.follower.drop(pause):
            pauses.append(pause)
    record.ended_at = record.started_at + max(pauses, default=0.0)
    record.details = {"dropped": len(pauses), "pauses_s": pauses}
    return record


async def gateway_kill(ctx: FaultContext) -> FaultRecord:
    """kill -9 of the gateway; it is started again on the same port."""
    at = await asyncio.to_thread(ctx.stack.kill_gateway)
    record = FaultRecord("gateway kill -9", at)
    await asyncio.to_thread(ctx.stack.restart_gateway)
    record.ended_at = time.time()
    return record


async def _kill_worker(ctx: FaultContext, identity: str | None, why: str) -> FaultRecord:
    victim = ctx.stack.worker_by_identity(identity) if identity else None
    details: dict[str, object] = {"target_chat": ctx.target.index, "chosen_by": why}
    if victim is None:  # e.g. the chat moved on: kill one of the workers at random
        victim = ctx.rng.choice(ctx.stack.live_workers())
        details["chosen_by"] = f"{why} not found: a random live worker"
    details["pid"] = victim.pid
    follower = ctx.target.follower
    if follower is not None:
        details["target_stage_at_kill"] = follower.stage
        details["target_preview_chars"] = follower.preview_chars
        details["target_chunks_received"] = len(follower.chunk_indices)
    at = await asyncio.to_thread(ctx.stack.kill_worker, victim)
    record = FaultRecord("worker kill -9", at, details=details)
    await asyncio.to_thread(ctx.stack.replace_workers)
    record.ended_at = time.time()
    return record


async def worker_kill_generating(ctx: FaultContext) -> FaultRecord:
    """kill -9 of the worker running the target chat's LLM call (generate_full_text)."""
    identity = await generating_worker(ctx.temporal, ctx.target.workflow_id)
    return await _kill_worker(ctx, identity, "runs the target's generate_full_text")


async def worker_kill_checkpointing(ctx: FaultContext) -> FaultRecord:
    """kill -9 of the worker holding the target chat's workflow while it saves chunks."""
    identity = await workflow_holder(ctx.temporal, ctx.target.workflow_id)
    return await _kill_worker(ctx, identity, "holds the target's workflow (latest task)")


async def _outage_probed(
    ctx: FaultContext,
    kind: str,
    take_down: Callable[[], float],
    bring_back: Callable[[], None],
    down_for_s: float | None = None,
) -> FaultRecord:
    """Take a service down (`take_down` returns when, as time.time()), keep it down for
    `down_for_s` from then if given (recorded in the details), and bring it back, both in
    a thread; the status endpoint is probed from before the outage until the service is
    back (or failed to come back)."""
    stop = asyncio.Event()
    probes = asyncio.create_task(probe_status_until(ctx, stop))
    at = await asyncio.to_thread(take_down)
    record = FaultRecord(kind, at)
    if down_for_s is not None:
        record.details = {"downtime_s": down_for_s}
        await asyncio.sleep(max(0.0, at + down_for_s - time.time()))
    try:
        await asyncio.to_thread(bring_back)
    finally:
        record.ended_at = time.time()
        stop.set()
        record.probes = await probes
    return record


async def postgres_restart(ctx: FaultContext) -> FaultRecord:
    """PostgreSQL immediate shutdown (SIGQUIT: every connection cut, no checkpoint), down
    for `pg_downtime_s`, then started again on the same data directory and port. The
    status endpoint is probed meanwhile."""
    return await _outage_probed(
        ctx,
        "postgres stop",
        functools.partial(ctx.stack.stop_postgres, signal.SIGQUIT),
        ctx.stack.restart_postgres,
        down_for_s=ctx.config.pg_downtime_s,
    )


async def temporal_kill(ctx: FaultContext) -> FaultRecord:
    """kill -9 of the Temporal dev server; started again on the same port and SQLite file.
    The status endpoint is probed meanwhile."""
    return await _outage_probed(
        ctx, "temporal kill -9", ctx.stack.kill_temporal, ctx.stack.restart_temporal
    )


async def kill_all(ctx: FaultContext) -> FaultRecord:
    """kill -9 of the gateway, every worker, Temporal and PostgreSQL at once; then
    everything is started again (PostgreSQL, Temporal, then gateway and workers)."""
    at = await asyncio.to_thread(ctx.stack.kill_everything)
    record = FaultRecord("everything kill -9", at)
    try:
        await asyncio.to_thread(ctx.stack.restart_everything)
    finally:
        record.ended_at = time.time()
    with contextlib.suppress(Exception):
        record.details = {"workers_alive": len(ctx.stack.live_workers())}
    return record


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "client-reconnect",
            "client disconnects and reconnects (F5)",
            "every open SSE connection is closed by the client, which reconnects with "
            "Last-Event-ID after 0.1-1 s",
            client_reconnect,
        ),
        Scenario(
            "gateway-kill",
            "gateway kill -9, restarted",
            "kill -9 of the gateway process; the harness starts it again on the same port",
            gateway_kill,
        ),
        Scenario(
            "worker-kill-generating",
            "worker kill -9 during generation",
            "kill -9 of the worker running the target chat's generate_full_text (from "
            "its pending activity); a replacement worker is started",
            worker_kill_generating,
            phase="generating",
        ),
        Scenario(
            "worker-kill-checkpointing",
            "worker kill -9 during checkpointing",
            "kill -9 of the worker that ran the target chat's latest workflow task (it "
            "holds the workflow) while chunks are saved; a replacement worker is started",
            worker_kill_checkpointing,
            phase="checkpointing",
        ),
        Scenario(
            "postgres-restart",
            "PostgreSQL stopped mid-answer, restarted",
            "immediate shutdown (SIGQUIT) of PostgreSQL, down for 3 s, started again on "
            "the same data directory and port; status probed meanwhile",
            postgres_restart,
            database_outage=True,
        ),
        Scenario(
            "temporal-kill",
            "Temporal dev server kill -9, restarted",
            "kill -9 of `temporal server start-dev`; started again on the same port and "
            "SQLite file; status probed meanwhile",
            temporal_kill,
        ),
        Scenario(
            "kill-all",
            "everything kill -9 at once, restarted",
            "kill -9 of the gateway, every worker, Temporal and PostgreSQL back to back; "
            "then PostgreSQL, Temporal, the gateway and the workers are started again",
            kill_all,
        ),
        Scenario(
            "operator-terminate",
            "operator terminates chats with the temporal CLI",
            "`temporal workflow terminate` of the target chat (mid-generation or "
            "mid-checkpoint) and of one more per 10 chats (at most 3); each must say "
            "`terminated` within seconds, keep a beginning of its answer, and leave "
            "nothing running",
            operator_terminate,
            # Early enough that the chat is still running when the CLI's terminate lands.
            fraction_range=(0.1, 0.6),
            after=after_terminate,
        ),
        Scenario(
            "operator-reset",
            "operator resets chats with the temporal CLI",
            "`temporal workflow reset` of chats mid-checkpoint and completed, to after a "
            "save_chunk (same answer) and to before the LLM call with the simulator's "
            "variant set (a new answer); each must serve exactly one run's answer",
            operator_reset,
            phase="checkpointing",
            cache=False,
            after=after_reset,
        ),
    )
}
