"""An operator's hand on running chats: `temporal workflow terminate` and `reset`, run with
Temporal's own CLI against the suite's server, as a person on call would.

`operator-terminate` ends chats that are mid-generation or mid-checkpoint; each must
become `terminated` within seconds (status API, PostgreSQL record, the follower's SSE
stream), keep the chunks it saved as a beginning of its answer, and leave nothing
running. `operator-reset` resets chats mid-checkpoint (the same answer goes on) and to
the workflow task that asked for `generate_full_text` (the model is asked again, with
the simulator's variant set so that it answers otherwise); every reset chat must then
serve exactly one run's answer, never a mix.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from chaos.client import get_status
from chaos.harness import (
    ChatRun,
    FaultContext,
    FaultRecord,
    start_and_follow,
)
from chaos.stack import CHAOS_USER, auth_headers
from common.contract import TERMINAL_EVENTS
from devstack.stack import temporal_cli
from testing.operator import reset_point_after, reset_point_before
from testing.oracle import expected_answer, expected_reply, prompt_ending

# "Within a few seconds": how soon a terminated chat must say so (status, record), and
# how soon visibility must count nothing running (tests/test_operator_actions.py: 10 s).
CHAOS_CLOSE_VISIBLE_S = 10.0
CLI_TIMEOUT_S = 30.0
# How long operator-reset waits for every chat to have its LLM answer before it sets
# the simulator's variant (which would change the answer of a chat still asking).
ALL_GENERATED_TIMEOUT_S = 90.0


# --- Temporal: the CLI, history and visibility ------------------------------------------


async def operator_cli(ctx: FaultContext, *args: str) -> tuple[bool, str, float]:
    """Run `temporal <args> --address <the suite's server>`: (succeeded, output, seconds)."""
    began = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        temporal_cli(),
        *args,
        "--address",
        ctx.stack.temporal_address,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout=CLI_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        return False, f"timed out after {CLI_TIMEOUT_S:.0f} s", time.monotonic() - began
    return process.returncode == 0, out.decode().strip()[-500:], time.monotonic() - began


async def activity_completions(temporal: Client, workflow_id: str, activity_type: str) -> int:
    """How many times `activity_type` completed in the chat's current run."""
    scheduled: dict[int, str] = {}
    completed = 0
    async for event in temporal.get_workflow_handle(workflow_id).fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled[event.event_id] = (
                event.activity_task_scheduled_event_attributes.activity_type.name
            )
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            attrs = event.activity_task_completed_event_attributes
            completed += scheduled.get(attrs.scheduled_event_id) == activity_type
    return completed


async def current_run_id(temporal: Client, workflow_id: str) -> str:
    return str((await temporal.get_workflow_handle(workflow_id).describe()).run_id)


async def running_chats_of_user(temporal: Client, user: str = CHAOS_USER) -> int:
    """Chats of `user` that Temporal's visibility counts as running (what the per-user
    running-chats limit counts)."""
    counted = await temporal.count_workflows(
        f'ChatUserId = "{user}" AND ExecutionStatus = "Running"'
    )
    return int(counted.count)


async def _poll(check: Any, timeout_s: float, interval_s: float = 0.1) -> float | None:
    """Seconds until `await check()` is true, or None after `timeout_s`."""
    began = time.monotonic()
    while True:
        if await check():
            return round(time.monotonic() - began, 3)
        if time.monotonic() - began > timeout_s:
            return None
        await asyncio.sleep(interval_s)


def _state(run: ChatRun) -> dict[str, Any]:
    """Where the chat stood as its viewer saw it, when the operator acted."""
    follower = run.follower
    if follower is None:
        return {"stage": "not followed"}
    return {
        "stage": follower.terminal or follower.stage,
        "preview_chars": follower.preview_chars,
        "chunks_received": len(follower.chunk_indices),
        "total_chunks": follower.total_chunks,
        "answer_chars": len(run.expected),
    }


# --- operator-terminate -------------------------------------------------------------------


async def operator_terminate(ctx: FaultContext) -> FaultRecord:
    """`temporal workflow terminate` of the target chat (mid-generation or mid-checkpoint)
    and, from 10 chats on, of one more per 10 chats (at most 3 in all) among those
    generating or checkpointing at that moment; all at once, as an operator clearing
    stuck chats would. Then, for each, how long until the status API and the
    PostgreSQL record say `terminated`."""
    wanted = min(3, 1 + ctx.config.chats // 10)
    others = [
        r
        for r in ctx.unfinished()
        if r is not ctx.target
        and r.follower is not None
        and r.follower.stage in ("generating", "checkpointing")
    ]
    first = ctx.target
    if first.follower is None or first.follower.done.is_set():  # the aim was missed
        first = others.pop(0) if others else first
    targets = [first, *ctx.rng.sample(others, min(wanted - 1, len(others)))]
    record = FaultRecord("temporal workflow terminate", time.time())
    outcomes = list(await asyncio.gather(*(_terminate(ctx, run) for run in targets)))
    # Every target may have completed before the CLI's terminate landed: try others.
    spare = [r for r in others if r not in targets]
    while not any(o.get("applied") for o in outcomes) and spare:
        run = spare.pop(0)
        if run.follower is not None and not run.follower.done.is_set():
            outcomes.append(await _terminate(ctx, run))
    record.ended_at = time.time()
    record.details = {"terminated": [o for o in outcomes if o.get("applied")]}
    refused = [o for o in outcomes if not o.get("applied")]
    if refused:
        record.details["not_applied"] = refused
    # Status and record delays, measured while the other chats go on.
    await asyncio.gather(*(_measure_close(ctx, run) for run in targets if run.action))
    return record


async def _terminate(ctx: FaultContext, run: ChatRun) -> dict[str, Any]:
    reason = f"chaos {ctx.tag}: stuck chat {run.index}"
    state = _state(run)
    ok, out, took = await operator_cli(
        ctx, "workflow", "terminate", "--workflow-id", run.workflow_id, "--reason", reason
    )
    done_at = time.time()
    outcome: dict[str, Any] = {
        "chat": run.index,
        "applied": ok,
        "at": state,
        "cli_s": round(took, 3),
    }
    if not ok:  # e.g. the chat completed in the meantime: it stays a normal chat
        outcome["cli"] = out
        return outcome
    run.action = "terminate"
    run.expected_status = "terminated"
    run.action_done_at = done_at
    run.operator = {"action": "terminate", "reason": reason, "at": state, "cli_s": round(took, 3)}
    return outcome


async def _measure_close(ctx: FaultContext, run: ChatRun) -> None:
    """Seconds from the CLI's return until GET /status says `terminated`, and until the
    PostgreSQL record does (written by the reconciler the gateway starts)."""

    async def status_says() -> bool:
        code, body = await get_status(ctx.http, run.workflow_id, auth_headers())
        return code == 200 and body.get("status") == "terminated"

    async def record_says() -> bool:
        return bool(
            await ctx.db.fetchval(
                "SELECT status = 'terminated' FROM generations WHERE workflow_id = $1",
                run.workflow_id,
            )
        )

    timeout = 3 * CHAOS_CLOSE_VISIBLE_S
    assert run.action_done_at is not None
    waited = time.time() - run.action_done_at
    status_s, record_s = await asyncio.gather(
        _poll(status_says, timeout), _poll(record_says, timeout)
    )
    run.operator["status_s"] = None if status_s is None else round(status_s + waited, 3)
    run.operator["record_s"] = None if record_s is None else round(record_s + waited, 3)


async def after_terminate(ctx: FaultContext, fault: FaultRecord) -> list[str]:
    """Once every chat ended: the terminated ones closed within CHAOS_CLOSE_VISIBLE_S,
    nothing of the user counts as running, no answer-cache claim and no LLM call of a
    terminated chat is left open."""
    failures: list[str] = []
    terminated = [r for r in ctx.runs if r.action == "terminate"]
    if not terminated:
        failures.append("the operator terminated no running chat (every target had finished)")
    for run in terminated:
        for what in ("status_s", "record_s"):
            took = run.operator.get(what)
            if took is None or took > CHAOS_CLOSE_VISIBLE_S:
                failures.append(
                    f"chat {run.index}: {what.removesuffix('_s')} not terminated within "
                    f"{CHAOS_CLOSE_VISIBLE_S} s of the terminate ({took})"
                )
    after = await _nothing_left_running(ctx, failures)
    ids = [r.workflow_id for r in terminated]

    async def no_claims() -> bool:
        return not await ctx.db.fetchval(
            "SELECT count(*) FROM answer_cache WHERE owner_workflow_id = ANY($1) "
            "AND state = 'pending'",
            ids,
        )

    async def no_open_calls() -> bool:
        return not await ctx.db.fetchval(
            "SELECT count(*) FROM llm_calls WHERE workflow_id = ANY($1) AND status = 'running'",
            ids,
        )

    # A viewer resuming after the end (Last-Event-ID = the terminal event) must get
    # nothing more: "a stream resumed after the terminal event ends at once".
    resumed: dict[str, Any] = {}
    for run in terminated:
        if run.follower is not None and run.follower.terminal:
            got = await _resume_after_end(ctx, run.workflow_id, run.follower.last_id)
            if got != []:
                resumed[f"chat {run.index}"] = got
    after["resumed_after_end"] = resumed
    if resumed:
        failures.append(
            f"a viewer resuming after the terminated event gets more (and no end): {resumed}"
        )
    after["claims_released_s"] = await _poll(no_claims, CHAOS_CLOSE_VISIBLE_S)
    if after["claims_released_s"] is None:
        failures.append("an answer-cache claim of a terminated chat is still held")
    after["llm_calls_closed_s"] = await _poll(no_open_calls, CHAOS_CLOSE_VISIBLE_S)
    if after["llm_calls_closed_s"] is None:
        failures.append("an LLM call of a terminated chat is still open in llm_calls")
    fault.details["after"] = after
    return failures


async def _resume_after_end(
    ctx: FaultContext, workflow_id: str, last_id: int, timeout_s: float = 5.0
) -> list[str] | str:
    """The event types a stream resumed with `Last-Event-ID: last_id` delivers before it
    closes; a string when it does not close within `timeout_s` or cannot be read."""
    got: list[str] = []
    headers = {**auth_headers(), "Last-Event-ID": str(last_id)}
    try:
        async with asyncio.timeout(timeout_s):
            async with ctx.http.stream(
                "GET", f"/api/workflows/{workflow_id}/events", headers=headers
            ) as response:
                if response.status_code != 200:
                    return f"HTTP {response.status_code}"
                async for line in response.aiter_lines():
                    if line.startswith("event:"):
                        got.append(line.partition(":")[2].strip())
    except TimeoutError:
        return f"still open after {timeout_s:.0f} s, having sent {got}"
    except httpx.HTTPError as err:
        return f"{type(err).__name__}: {err}"
    return got


async def _nothing_left_running(ctx: FaultContext, failures: list[str]) -> dict[str, Any]:
    """Temporal's visibility must count no running chat of the suite's user (it lags a
    little behind the executions: polled up to CHAOS_CLOSE_VISIBLE_S)."""
    last = -1

    async def none_running() -> bool:
        nonlocal last
        last = await running_chats_of_user(ctx.temporal)
        return last == 0

    took = await _poll(none_running, CHAOS_CLOSE_VISIBLE_S, interval_s=0.5)
    if took is None:
        failures.append(f"{last} chat(s) of the user still count as running")
    return {"running_after": last, "running_zero_after_s": took}


# --- operator-reset -----------------------------------------------------------------------


async def operator_reset(ctx: FaultContext) -> FaultRecord:
    """`temporal workflow reset` of several chats:

    1. the target, mid-checkpoint, to after its k-th `save_chunk` (k drawn among those
       completed): the new run goes on with the same answer;
    2. once no chat is waiting for its LLM answer any more, one more chat is started
       (the scenario's own, chat N); while it is generating, the simulator's variant is
       set (the model answers otherwise) and three chats are reset to just before
       the LLM call: that one mid-generation, one still checkpointing and one
       completed; each answer is generated again, and the variant is cleared as soon
       as the three new generations have started;
    3. a completed chat to after its k-th `save_chunk` (same answer again).

    Each reset chat is then followed again to the end of its new run (a viewer coming
    back to a chat that had ended)."""
    record = FaultRecord("temporal workflow reset", time.time())
    resets: list[dict[str, Any]] = [await _reset(ctx, ctx.target, "reset-keep")]

    waited = await _poll(lambda: _all_generated(ctx), ALL_GENERATED_TIMEOUT_S, interval_s=0.05)
    late = await _start_late_chat(ctx) if waited is not None else None
    followed = [(r, r.follower) for r in ctx.runs if r.action is None and r.follower is not None]
    followed = [(r, f) for r, f in followed if r is not late]
    in_flight = [r for r, f in followed if f.stage == "checkpointing" and not f.done.is_set()]
    finished = [r for r, f in followed if f.terminal == "completed"]
    regenerate = [late] if late is not None else []
    regenerate += ctx.rng.sample(in_flight, min(1, len(in_flight)))
    regenerate += ctx.rng.sample(finished, min(1, len(finished)))
    rest = [r for r in finished if r not in regenerate]
    keep_finished = ctx.rng.sample(rest, min(1, len(rest)))

    variant = f"chaos-reset-{ctx.tag}"
    if regenerate:
        before = {r.index: await _generations(ctx, r) for r in regenerate}
        answer = await ctx.http.post(
            f"{ctx.stack.simulator_url}/sim/variant", json={"variant": variant}
        )
        answer.raise_for_status()
        try:
            resets += await asyncio.gather(
                *(_reset(ctx, r, "reset-regenerate", variant) for r in regenerate)
            )
            # The variant applies to generations started while it is set: keep it until
            # each regenerated chat's new generation has started, and no longer.
            for run in regenerate:
                if run.action is None:
                    continue

                async def started(run: ChatRun = run) -> bool:
                    return await _generations(ctx, run) > before[run.index]

                if await _poll(started, 60) is None:
                    run.operator["problem"] = "its new generation did not start within 60 s"
        finally:
            await ctx.http.delete(f"{ctx.stack.simulator_url}/sim/variant")
    resets += [await _reset(ctx, r, "reset-keep") for r in keep_finished]

    record.ended_at = time.time()
    record.details = {
        "resets": [r for r in resets if r.get("applied")],
        "variant": variant,
        "waited_for_generations_s": waited,
        "late_chat": late.index if late is not None else None,
    }
    refused = [r for r in resets if not r.get("applied")]
    if refused:
        record.details["not_applied"] = refused
    return record


async def _start_late_chat(ctx: FaultContext, timeout_s: float = 60) -> ChatRun | None:
    """Start one more chat (answer cut at the token limit: the longest generation) and
    return it once a third of its answer is on its viewer's screen; None if it got no
    further than that in `timeout_s` (it is verified like the others all the same)."""
    index = len(ctx.runs)
    max_tokens = ctx.config.max_tokens
    prompt = prompt_ending(
        "length",
        max_tokens,
        f"Chaos operator-reset late chat {index}: tell me about durable execution "
        f"[{ctx.tag}-{index}]",
        unique=False,
    )
    expected = expected_answer(prompt, max_tokens)
    run = ChatRun(
        index, prompt, max_tokens, expected, f"chaos-{ctx.tag}-{index}", "length",
        use_cache=False, original_expected=expected,
    )  # fmt: skip
    ctx.runs.append(run)
    run.task = asyncio.create_task(start_and_follow(ctx.http, run, 0.0))
    ctx.background.append(run.task)

    async def mid_generation() -> bool:
        follower = run.follower
        if follower is None:
            return False
        return (
            follower.done.is_set()
            or follower.stage not in ("queued", "validating", "generating")
            or (follower.stage == "generating" and follower.preview_chars >= len(expected) // 3)
        )

    if await _poll(mid_generation, timeout_s, interval_s=0.02) is None:
        return None
    return run


async def _all_generated(ctx: FaultContext) -> bool:
    """Whether no chat can start an LLM generation any more (every one is checkpointing
    or has ended): the simulator's variant then changes no one else's answer."""
    for run in ctx.runs:
        if run.start_error or run.action is not None:
            continue
        follower = run.follower
        if follower is None:
            return False
        if not follower.done.is_set() and follower.stage not in ("checkpointing", "completed"):
            return False
    return True


async def _generations(ctx: FaultContext, run: ChatRun) -> int:
    stats = (await ctx.http.get(f"{ctx.stack.simulator_url}/sim/stats")).json()
    return int(stats["by_prompt"].get(run.prompt, {}).get("started", 0))


async def _reset(ctx: FaultContext, run: ChatRun, kind: str, variant: str = "") -> dict[str, Any]:
    """Reset the chat with the CLI (`reset-keep`: to after a `save_chunk`;
    `reset-regenerate`: to before `generate_full_text`), record what it must give, and
    follow it again to the end of the new run."""
    outcome: dict[str, Any] = {"chat": run.index, "kind": kind, "applied": False}
    state = _state(run)
    outcome["at"] = state
    wf = run.workflow_id
    if kind == "reset-keep":
        saved = 0
        deadline = time.monotonic() + 10
        while saved < 1 and time.monotonic() < deadline:  # a chunk saved in the history
            saved = await activity_completions(ctx.temporal, wf, "save_chunk")
            await asyncio.sleep(0.05)
        if saved < 1:
            outcome["why"] = "no save_chunk completed in the history"
            return outcome
        total = run.follower.total_chunks if run.follower else None
        # k < total, so the new run has chunks left to save.
        nth = ctx.rng.randint(1, max(1, min(saved, (total or saved + 1) - 1)))
        outcome["after_save_chunk"] = nth
        point = await reset_point_after(ctx.temporal, wf, "save_chunk", nth)
    else:
        point = await reset_point_before(ctx.temporal, wf, "generate_full_text")
    if point is None:
        outcome["why"] = "no reset point in the history"
        return outcome
    previous_run = await current_run_id(ctx.temporal, wf)
    answer_run = await ctx.db.fetchval(
        "SELECT answer_run_id FROM generations WHERE workflow_id = $1", wf
    )
    reason = f"chaos {ctx.tag}: {kind} of chat {run.index}"
    ok, out, took = await operator_cli(
        ctx, "workflow", "reset", "--workflow-id", wf,
        "--event-id", str(point), "--reason", reason,
    )  # fmt: skip
    done_at = time.time()
    outcome.update(event_id=point, cli_s=round(took, 3))
    if not ok:
        outcome["cli"] = out
        return outcome
    new_run = await current_run_id(ctx.temporal, wf)
    if new_run == previous_run:
        outcome["cli"] = f"no new run after the reset: {out}"
        return outcome
    outcome["applied"] = True
    run.action = kind
    run.action_done_at = done_at
    run.reset_run_id = new_run
    if kind == "reset-regenerate":
        reply = expected_reply(run.prompt, run.max_tokens, variant=variant)
        run.expected = "".join(reply.tokens)
        run.finish_reason = reply.finish_reason
        run.expected_generations = 2
        outcome["new_answer_differs"] = run.expected != run.original_expected
    else:
        run.kept_answer_run_id = answer_run
    run.operator = {
        "action": kind,
        "reason": reason,
        "at": state,
        "event_id": point,
        "cli_s": round(took, 3),
        "previous_run_id": previous_run,
        "run_id": new_run,
        **({"after_save_chunk": outcome["after_save_chunk"]} if kind == "reset-keep" else {}),
    }
    ctx.background.append(asyncio.create_task(_follow_through_reset(ctx, run)))
    return outcome


def _saw_new_run_end(run: ChatRun) -> bool:
    """Whether the follower got the reset naming the new run and a terminal event after."""
    seen = False
    for event in run.follower.events if run.follower else []:
        if event.type == "reset" and isinstance(event.data, dict):
            seen = seen or event.data.get("run_id") == run.reset_run_id
        elif seen and event.type in TERMINAL_EVENTS:
            return True
    return False


async def _follow_through_reset(ctx: FaultContext, run: ChatRun, timeout_s: float = 120) -> None:
    """Once the chat's first follow has ended (it may have ended with the old run's
    `completed`), follow it again from the last event received until the new run's end."""
    if run.task is not None:
        await asyncio.wait({run.task})
    follower = run.follower
    assert follower is not None
    deadline = time.monotonic() + timeout_s
    while not _saw_new_run_end(run) and time.monotonic() < deadline:
        follower.reconnected_at.append(time.time())
        try:
            await asyncio.wait_for(follower.follow_again(), timeout=deadline - time.monotonic())
        except TimeoutError:
            return  # verified as it stands: the missing end is reported there


async def after_reset(ctx: FaultContext, fault: FaultRecord) -> list[str]:
    """Once every chat ended: there were resets of both kinds, no chat runs, and each
    reset chat's current run in Temporal is the one its record names."""
    failures: list[str] = []
    kinds = {r.action for r in ctx.runs if r.action}
    for kind in ("reset-keep", "reset-regenerate"):
        if kind not in kinds and ctx.config.chats >= 3:
            failures.append(f"no {kind} was made")
    after = await _nothing_left_running(ctx, failures)
    ids = [r.workflow_id for r in ctx.runs if r.action]

    async def no_open_calls() -> bool:
        return not await ctx.db.fetchval(
            "SELECT count(*) FROM llm_calls WHERE workflow_id = ANY($1) AND status = 'running'",
            ids,
        )

    after["llm_calls_closed_s"] = await _poll(no_open_calls, CHAOS_CLOSE_VISIBLE_S)
    calls = await ctx.db.fetch(
        "SELECT workflow_id, status, count(*) AS n FROM llm_calls WHERE workflow_id = ANY($1) "
        "GROUP BY workflow_id, status",
        ids,
    )
    by_chat = {r.workflow_id: r.index for r in ctx.runs}
    after["llm_calls"] = {f"chat {by_chat[c['workflow_id']]}": {} for c in calls}
    for c in calls:
        after["llm_calls"][f"chat {by_chat[c['workflow_id']]}"][c["status"]] = c["n"]
    if after["llm_calls_closed_s"] is None:
        failures.append(f"LLM calls of reset chats left running in llm_calls: {after['llm_calls']}")
    for run in ctx.runs:
        if run.action and run.reset_run_id:
            current = await current_run_id(ctx.temporal, run.workflow_id)
            if current != run.reset_run_id:
                failures.append(f"chat {run.index}: Temporal's current run is not the reset's")
            if run.operator.get("problem"):
                failures.append(f"chat {run.index}: {run.operator['problem']}")
    fault.details["after"] = after
    return failures
