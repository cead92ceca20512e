"""`durable-chat` (devstack/cli.py) against the session stack: list workers, kill one."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import sys
from datetime import timedelta

from temporalio.client import Client

from common import contract
from common.models import ChatRequest
from devstack import fleet as fl
from testing.chats import chunk_rows, start_chat_directly, wait_for
from testing.oracle import expected_answer, unique_prompt
from testing.stack import ROOT, LocalStack, free_port


async def run_cli(
    stack: LocalStack, *args: str, env: dict[str, str] | None = None, timeout_s: float = 90
) -> tuple[int, str, str]:
    """Run `python -m devstack.cli ARGS` against `stack`; (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "devstack.cli", *args,
        cwd=ROOT,
        env={**os.environ, **stack.env(), **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=timeout_s)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def identity_of(pid: int) -> str:
    return f"worker-{pid}@{socket.gethostname()}"


async def polling_workers(fleet: LocalStack) -> dict[str, dict]:
    """`workers --json` by identity, once every live worker of `fleet` polls both task queue
    types (a worker logs "worker started" just before its first polls reach Temporal)."""
    pids = {w.pid for w in fleet.live_workers()}

    async def all_polling() -> dict[str, dict] | None:
        code, out, err = await run_cli(fleet, "workers", "--json")
        assert code == 0, err
        listed = {w["identity"]: w for w in json.loads(out)["workers"]}
        polling = all(
            set(listed.get(identity_of(pid), {}).get("polls", [])) == {"workflow", "activity"}
            for pid in pids
        )
        return listed if polling else None

    return await wait_for(all_polling, timeout_s=30, interval_s=0.5)


async def test_workers_lists_every_live_worker_with_its_pid(fleet: LocalStack) -> None:
    pids = {w.pid for w in fleet.live_workers()}
    listed = await polling_workers(fleet)
    for pid in pids:
        worker = listed[identity_of(pid)]
        assert worker["pid"] == pid and worker["alive"] is True
        assert set(worker["polls"]) == {"workflow", "activity"}
    # Workers an earlier test killed may still be listed by Temporal: never as alive.
    assert {w["pid"] for w in listed.values() if w["alive"]} == pids

    code, out, err = await run_cli(fleet, "workers")
    assert code == 0, err
    assert out.splitlines()[1].split()[:4] == ["WORKER", "PID", "ALIVE", "LAST"]
    for pid in pids:
        assert re.search(rf"^{identity_of(pid)}\s+{pid}\s+yes\s", out, re.MULTILINE), out


async def test_kill_unknown_worker_exits_1_and_lists_the_live_ones(fleet: LocalStack) -> None:
    await polling_workers(fleet)
    code, out, err = await run_cli(fleet, "kill", "worker-1@elsewhere")
    assert code == 1 and out == ""
    assert "no live worker 'worker-1@elsewhere'" in err
    for worker in fleet.live_workers():
        assert f"{identity_of(worker.pid)} (pid {worker.pid})" in err


async def test_temporal_unreachable_is_one_line_and_exit_2(stack: LocalStack) -> None:
    code, out, err = await run_cli(
        stack, "workers", env={"TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}"}
    )
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Temporal is unreachable" in err


async def test_dry_run_says_what_would_happen_and_kills_nothing(fleet: LocalStack) -> None:
    await polling_workers(fleet)
    worker = fleet.live_workers()[0]
    code, out, err = await run_cli(fleet, "kill", "--dry-run", str(worker.pid))
    assert code == 0, err
    assert out.startswith(f"kill -9 {worker.pid}  ({identity_of(worker.pid)})")
    assert "(dry run: no signal sent)" in out
    assert worker.alive()


async def test_kill_chat_kills_the_worker_running_it_and_the_chat_resumes(
    fleet: LocalStack, temporal_client: Client, db
) -> None:
    pids = {w.pid for w in fleet.live_workers()}
    prompt = unique_prompt("A long answer for the CLI, please")
    max_tokens = 120
    # Tiny chunks (~90) saved one at a time: a checkpoint phase long enough to kill into.
    request = ChatRequest(
        prompt=prompt, max_tokens=max_tokens, chunk_target_chars=8, checkpoint_window=1
    )
    handle = await start_chat_directly(temporal_client, request)

    code, out, err = await run_cli(
        fleet, "kill", "--chat", handle.id, "--at-chunk", "20", "--follow", "--timeout", "60"
    )
    print(out)  # shown when the test fails
    assert code == 0, f"{out}\n{err}"

    # The plan: which process, and where the survivor will resume.
    killed = re.search(r"^kill -9 (\d+)  \((worker-\d+@\S+?)\)", out, re.MULTILINE)
    assert killed, out
    pid, identity = int(killed.group(1)), killed.group(2)
    assert pid in pids and identity == identity_of(pid)
    plan = " ".join(out.split())  # the plan is wrapped at 100 columns
    assert "holds the chat's workflow" in plan
    planned = re.search(r"resumes at chunk (\d+) \(`save_chunk (\d+)/(\d+)`", plan)
    assert planned, out
    chunk = int(planned.group(1))
    assert int(planned.group(2)) == chunk + 1 and chunk >= 20
    assert f"sent SIGKILL to {pid}" in out
    victim = next(w for w in fleet.workers if w.pid == pid)
    assert not victim.alive()

    # What happened matches the plan: --follow read it from the history, the survivor logged it.
    assert re.search(rf"took the chat over .* and resumed at chunk {chunk}\n", out), out
    result = await handle.result(rpc_timeout=timedelta(seconds=30))
    rows = await chunk_rows(db, handle.id)
    assert [r["idx"] for r in rows] == list(range(result.total_chunks))
    assert "".join(r["text"] for r in rows) == expected_answer(prompt, max_tokens)
    assert f"completed: {result.total_chunks} chunks, each saved once" in out
    survivors_logs = "".join(w.log_tail(3000) for w in fleet.workers if w.pid != pid)
    assert f"replayed history; resuming at chunk {chunk} " in survivors_logs


def test_worker_identities() -> None:
    assert contract.parse_identity("worker-4242@host-1.example") == (4242, "host-1.example")
    assert contract.parse_identity("some-other-client") is None
    assert fl.is_worker_process(os.getpid()) is False  # pytest is not a worker
