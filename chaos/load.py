"""`python -m chaos.load`: N concurrent chats through one gateway, all followed over SSE.

    python -m chaos.load [--chats 200] [--workers 2] [--max-tokens 300] [--seed S]

Starts a local stack (default chunking and checkpoint window, resume mode, the
simulator at its default speed unless told otherwise), starts every chat at once
through the gateway (`POST /api/workflows/start`) and follows each one on its SSE
stream, as N browser tabs would. Every chat must complete; its chunks in PostgreSQL
must be the simulator's answer, once each; its stream must carry every event once; the
simulator must have generated it once. Reports wall time, chats/s, chunk checkpoints/s,
and p50/p95 of the chat latency (start request -> `completed` event) and of the time to
the first live token. Exit status 1 on any error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.sampler import ProcessSampler
from bench.stats import percentile
from chaos.client import ChatFollower
from chaos.stack import ChaosStack, auth_headers
from testing.chats import StartRefusedError, start_chat_retrying
from testing.machine import machine_info
from testing.oracle import expected_answer

DEFAULT_SIMULATOR = {"SIM_TTFT_MS": "400", "SIM_TOKENS_PER_SECOND": "40"}


@dataclass
class LoadChat:
    prompt: str
    max_tokens: int
    workflow_id: str = ""
    requested_at: float = 0.0
    accepted_at: float = 0.0
    start_attempts: int = 0
    follower: ChatFollower | None = None
    error: str | None = None


def _stack_processes(stack: ChaosStack) -> dict[str, int]:
    """The stack's live processes by name (their CPU is summed per kind: `worker-2` ->
    `worker`)."""
    return {p.name: p.pid for p in stack.local.processes if p.alive()}


def _seconds(values: list[float], q: float) -> float | None:
    value = percentile(values, q)
    return None if value is None else round(value, 3)


def _cpu_by_kind(sampler: ProcessSampler) -> dict[str, float]:
    used: dict[str, float] = {}
    for name, seconds in sampler.cpu_seconds().items():
        kind = name.split("-")[0]
        used[kind] = round(used.get(kind, 0.0) + seconds, 1)
    return dict(sorted(used.items()))


async def _run_chat(http: httpx.AsyncClient, chat: LoadChat, deadline_s: float) -> None:
    chat.requested_at = time.time()
    body = {"prompt": chat.prompt, "max_tokens": chat.max_tokens, "cache": False}
    body["idempotency_key"] = uuid.uuid5(uuid.NAMESPACE_URL, chat.prompt).hex
    try:
        chat.workflow_id, chat.start_attempts = await start_chat_retrying(http, body, deadline_s=60)
    except StartRefusedError as err:
        chat.error = str(err)
        return
    chat.accepted_at = time.time()
    # Backoff of the UI's client (ui/gateway_client.py): 0.5 s doubling up to 5 s.
    chat.follower = ChatFollower(http, chat.workflow_id, first_backoff_s=0.5, max_backoff_s=5.0)
    try:
        await asyncio.wait_for(chat.follower.run(), timeout=deadline_s)
    except TimeoutError:
        chat.error = f"not finished after {deadline_s} s"


async def run_load(stack: ChaosStack, chats: int, max_tokens: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    tag = uuid.uuid4().hex[:8]
    work = [
        LoadChat(f"Load chat {i}: explain durable execution, please [{tag}-{i}]", max_tokens)
        for i in range(chats)
    ]
    rng.shuffle(work)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=chats + 10)
    async with httpx.AsyncClient(
        base_url=stack.gateway_url,
        limits=limits,
        timeout=httpx.Timeout(60.0, connect=10.0),
        headers=auth_headers(),
    ) as http:
        with ProcessSampler(lambda: _stack_processes(stack), interval_s=0.5) as sampler:
            began = time.time()
            await asyncio.gather(*(_run_chat(http, chat, 900.0) for chat in work))
            ended = time.time()
        cpu_used = _cpu_by_kind(sampler)
        stats = (await http.get(f"{stack.simulator_url}/sim/stats")).json()

    db = await asyncpg.connect(stack.database_url)
    try:
        errors: list[str] = []
        chunk_rows = 0
        latencies: list[float] = []
        first_token: list[float] = []
        accept: list[float] = []
        reconnects = 0
        for chat in work:
            label = chat.workflow_id or chat.prompt[-12:]
            if chat.error:
                errors.append(f"{label}: {chat.error}")
                continue
            assert chat.follower is not None
            follower = chat.follower
            reconnects += follower.connects - 1
            if follower.terminal != "completed":
                errors.append(f"{label}: ended {follower.terminal}")
                continue
            rows = await db.fetch(
                "SELECT idx, text FROM chunks WHERE workflow_id = $1 ORDER BY idx", chat.workflow_id
            )
            chunk_rows += len(rows)
            if [r["idx"] for r in rows] != list(range(len(rows))) or "".join(
                r["text"] for r in rows
            ) != expected_answer(chat.prompt, chat.max_tokens):
                errors.append(f"{label}: chunk rows are not the answer once")
            log_seqs = await db.fetch(
                "SELECT seq FROM chat_events WHERE workflow_id = $1 ORDER BY seq", chat.workflow_id
            )
            if [e.seq for e in follower.events] != [r["seq"] for r in log_seqs]:
                errors.append(f"{label}: the stream did not carry every event exactly once")
            generated = stats["by_prompt"].get(chat.prompt, {}).get("started", 0)
            if generated != 1:
                errors.append(f"{label}: {generated} generations")
            done_at = follower.events[-1].at
            latencies.append(done_at - chat.requested_at)
            accept.append(chat.accepted_at - chat.requested_at)
            delta_at = next((e.at for e in follower.events if e.type == "delta"), None)
            if delta_at is not None:
                first_token.append(delta_at - chat.requested_at)
    finally:
        await db.close()

    wall = ended - began
    completed = sum(
        1 for c in work if c.follower is not None and c.follower.terminal == "completed"
    )
    return {
        "chats": chats,
        "completed": completed,
        "errors": len(errors),
        "error_samples": errors[:10],
        "wall_s": round(wall, 2),
        "chats_per_s": round(completed / wall, 2),
        "chunk_checkpoints": chunk_rows,
        "chunk_checkpoints_per_s": round(chunk_rows / wall, 1),
        "latency_s": {
            "p50": _seconds(latencies, 50),
            "p95": _seconds(latencies, 95),
            "max": round(max(latencies), 3) if latencies else None,
        },
        "first_token_s": {"p50": _seconds(first_token, 50), "p95": _seconds(first_token, 95)},
        "start_request_s": {"p50": _seconds(accept, 50), "p95": _seconds(accept, 95)},
        "start_retries": sum(c.start_attempts - 1 for c in work if c.start_attempts),
        "sse_reconnects": reconnects,
        "sse_refused": sum(c.follower.refused for c in work if c.follower is not None),
        "generations_started": stats["generations_started"],
        "cpu_s_by_process": cpu_used,
        "cpu_s_machine_capacity": round(wall * (os.cpu_count() or 1), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos.load", description=__doc__)
    parser.add_argument("--chats", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=300)
    parser.add_argument("--ttft-ms", type=int, default=int(DEFAULT_SIMULATOR["SIM_TTFT_MS"]))
    parser.add_argument(
        "--tokens-per-second", type=float, default=float(DEFAULT_SIMULATOR["SIM_TOKENS_PER_SECOND"])
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--keep-workdir", action="store_true")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 1_000_000)
    simulator = {
        "SIM_TTFT_MS": str(args.ttft_ms),
        "SIM_TOKENS_PER_SECOND": str(args.tokens_per_second),
    }
    workdir = Path(tempfile.mkdtemp(prefix="durable-chat-load-"))
    stack = ChaosStack(
        workdir, mode="resume", workers=args.workers, simulator_env=simulator, app_env={}
    )
    try:
        print(f"starting a stack in {workdir} ({args.workers} workers) ...", flush=True)
        stack.start()
        print(f"{args.chats} concurrent chats of {args.max_tokens} tokens ...", flush=True)
        load_before = os.getloadavg()
        result = asyncio.run(run_load(stack, args.chats, args.max_tokens, seed))
    finally:
        stack.stop()
        if args.keep_workdir:
            print(f"logs and data kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report = {
        "command": "python -m chaos.load " + " ".join(argv if argv is not None else sys.argv[1:]),
        "seed": seed,
        "workers": args.workers,
        "max_tokens": args.max_tokens,
        "simulator": simulator,
        "machine": {**machine_info(), "load_average_before": [round(x, 2) for x in load_before]},
        **result,
    }
    latency, first = result["latency_s"], result["first_token_s"]
    print(
        f"\n{result['completed']}/{result['chats']} completed, {result['errors']} errors, "
        f"wall {result['wall_s']} s, {result['chats_per_s']} chats/s, "
        f"{result['chunk_checkpoints_per_s']} chunk checkpoints/s\n"
        f"latency (start -> completed) p50 {latency['p50']} s, p95 {latency['p95']} s, "
        f"max {latency['max']} s; first token p50 {first['p50']} s, p95 {first['p95']} s"
    )
    for sample in result["error_samples"]:
        print(f"  error: {sample}")
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report))
    return 0 if result["errors"] == 0 and result["completed"] == args.chats else 1


if __name__ == "__main__":
    sys.exit(main())
