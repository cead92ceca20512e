"""`durable-chat`: the operator CLI of the local stack.

    durable-chat up [--workers N]         the whole stack in this terminal (what `make up` does)
    durable-chat workers [--json]         live workers and the chats each is running
    durable-chat kill WORKER              kill -9 a worker (identity `worker-<pid>@<host>` or pid)
    durable-chat kill --chat WORKFLOW_ID  kill -9 the worker running that chat's workflow

`kill` says what will happen before it sends the signal; `--follow` then watches the
chat until another worker has taken it over and it has completed.

Everything is read from Temporal (pollers of the task queue, running workflows, their
descriptions and histories) and, for progress when no worker answers, PostgreSQL.
Exit codes: 0 done, 1 refused (unknown worker, another host, chat not running), 2
Temporal unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import asyncpg
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionDescription, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from common import contract
from common.settings import Settings, get_settings
from devstack import fleet as fl
from devstack.fleet import Chat, Fleet, FleetWorker, TemporalUnreachableError
from storage import ChatStore

ROOT = Path(__file__).resolve().parent.parent
WIDTH = 100
# Left out of the plan's "does not run … again" (saved chunks are counted instead).
_BOOKKEEPING = {"record_generation", "save_chunk"}
_CLOSED = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
}


class Refused(Exception):
    """An operator error the CLI explains in a line or two, exit code 1."""


# --- configuration -----------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> Settings:
    """Settings of the stack to talk to: flags, then TEMPORAL_ADDRESS / DATABASE_URL (env or
    .env), then the ports `make up` was moved to (TEMPORAL_PORT, POSTGRES_PORT)."""
    settings = get_settings()
    update: dict[str, str] = {}
    if args.temporal_address:
        update["temporal_address"] = args.temporal_address
    elif "temporal_address" not in settings.model_fields_set and os.environ.get("TEMPORAL_PORT"):
        update["temporal_address"] = f"127.0.0.1:{os.environ['TEMPORAL_PORT']}"
    if args.database_url:
        update["database_url"] = args.database_url
    elif "database_url" not in settings.model_fields_set and os.environ.get("POSTGRES_PORT"):
        update["database_url"] = (
            f"postgresql://postgres@127.0.0.1:{os.environ['POSTGRES_PORT']}/durable_chat"
        )
    return settings.model_copy(update=update) if update else settings


@dataclass
class Session:
    settings: Settings
    client: Client
    store: ChatStore | None
    database: str


async def _open(args: argparse.Namespace) -> tuple[Session, asyncpg.Pool | None]:
    settings = _settings(args)
    client = await fl.connect(settings)
    store, pool, database = await fl.open_store(settings)
    return Session(settings, client, store, database), pool


# --- durable-chat up ---------------------------------------------------------------------


def cmd_up(args: argparse.Namespace, out: TextIO) -> int:
    if args.workers is not None:
        if args.workers < 1:
            raise Refused("--workers must be at least 1")
        os.environ["WORKERS"] = str(args.workers)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    if not Path("worker.py").exists():  # circus runs `python worker.py` in this directory
        if not (ROOT / "worker.py").exists():
            raise Refused("run `durable-chat up` in the durable-chat checkout (next to worker.py)")
        print(f"(starting the stack from {ROOT}, next to worker.py)", file=out, flush=True)
        os.chdir(ROOT)
    from devstack.__main__ import up

    return up()


# --- durable-chat workers ----------------------------------------------------------------


def _alive_text(worker: FleetWorker) -> str:
    if worker.alive is None:
        return f"? ({worker.host or 'unknown host'})"
    return "yes" if worker.alive else "no (gone)"


def render_workers(fleet: Fleet, out: TextIO) -> None:
    chats = {c.workflow_id: c for c in fleet.chats}
    live = fleet.live()
    print(
        f"{len(live)} live worker{'s' * (len(live) != 1)} on {fleet.host} polling "
        f"{fleet.task_queue} at {fleet.temporal_address}; "
        f"{len(chats)} running chat{'s' * (len(chats) != 1)}",
        file=out,
    )
    header = ("WORKER", "PID", "ALIVE", "LAST POLL", "CHAT", "STAGE", "PROGRESS", "RUNS HERE")
    rows: list[tuple[str, ...]] = []
    placed: set[str] = set()
    for worker in fleet.workers:
        first = (
            worker.identity,
            str(worker.pid or "?"),
            _alive_text(worker),
            fl.ago(worker.last_poll),
        )
        if not worker.chats:
            rows.append((*first, "-", "", "", ""))
        for n, (workflow_id, runs) in enumerate(worker.chats):
            chat = chats[workflow_id]
            placed.add(workflow_id)
            rows.append(
                (
                    *(first if n == 0 else ("", "", "", "")),
                    workflow_id,
                    chat.stage or "?",
                    chat.progress_text,
                    ", ".join(runs),
                )
            )
    for chat in fleet.chats:
        if chat.workflow_id not in placed:
            waiting = "waiting for a worker" if chat.workflow_task != "none" else "-"
            rows.append(
                (
                    "(none)",
                    "",
                    "",
                    "",
                    chat.workflow_id,
                    chat.stage or "?",
                    chat.progress_text,
                    waiting,
                )
            )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(), file=out
        )
    if any(w.alive is False for w in fleet.workers):
        print(
            "\nTemporal lists a poller for a few minutes after its process is gone; ALIVE "
            "checks the pid on this host.",
            file=out,
        )
    if fleet.database != "ok":
        print(f"\nPostgreSQL {fleet.database}: progress only from live workers.", file=out)


async def cmd_workers(args: argparse.Namespace, out: TextIO) -> int:
    session, pool = await _open(args)
    try:
        fleet = await fl.snapshot(session.client, session.settings, session.store, session.database)
    finally:
        await _close(pool)
    if args.json:
        json.dump(fleet.to_json(), out, indent=2)
        print(file=out)
    else:
        render_workers(fleet, out)
    return 0


async def _close(pool: asyncpg.Pool | None) -> None:
    if pool is not None:
        await pool.close()


# --- durable-chat kill -------------------------------------------------------------------


def _wrap(text: str, indent: str = "  - ") -> str:
    return textwrap.fill(
        text,
        width=WIDTH,
        initial_indent=indent,
        subsequent_indent=" " * len(indent),
        break_on_hyphens=False,
        break_long_words=False,
    )


def _seconds(value: float | None) -> str:
    if value is None:
        return "?"
    return f"{value:g} s"


def _supervisor(pid: int) -> str | None:
    """'circus' when the worker's parent is circusd (`make up`), else None."""
    try:
        ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        parent = Path(f"/proc/{ppid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, IndexError, ValueError):
        return None
    return "circus" if "circus" in parent else None


def _resume_point(chat: Chat, *, graceful: bool = False) -> str:
    """Where the worker that replays `chat` goes on, in the words of its log line."""
    if chat.stage == "checkpointing" and chat.total_chunks:
        k = chat.chunks_scheduled or 0
        if graceful and k < chat.total_chunks:
            return (
                f"resumes at the first chunk not scheduled by then: chunk {k} or later, as the "
                'stopping worker goes on scheduling while it drains (its log: "replayed history; '
                'resuming at chunk …")'
            )
        if k < chat.total_chunks:
            return (
                f"resumes at chunk {k} (`save_chunk {k + 1}/{chat.total_chunks}` in the "
                f'Temporal UI; its log: "replayed history; resuming at chunk {k}")'
            )
        return (
            f"finishes the chat: all {chat.total_chunks} save_chunk activities are already "
            'scheduled (its log: "replayed history; resuming at completed")'
        )
    if chat.stage == "generating":
        return (
            "resumes at checkpointing once generate_full_text has completed (its log: "
            '"replayed history; resuming at checkpointing")'
        )
    return "goes on from where the history ends"


def _in_flight(activities: list[fl.RunningActivity]) -> str:
    """'its in-flight save_chunk 3/9 is' / 'its 2 in-flight save_chunk (3/9 and 4/9) are'."""
    first = activities[0]
    if len(activities) == 1:
        return f"its in-flight {first.summary} is"
    ordered = sorted(activities, key=lambda a: int(a.activity_id) if a.activity_id.isdigit() else 0)
    names = [a.summary.removeprefix(f"{first.activity_type} ") for a in ordered]
    listed = ", ".join(names[:-1]) + f" and {names[-1]}"
    return f"its {len(activities)} in-flight {first.activity_type} ({listed}) are"


def _activity_plan(activities: list[fl.RunningActivity]) -> str:
    """One sentence for the in-flight activities of one type and policy."""
    first = activities[0]
    if first.heartbeat_timeout_s:
        detect = f"once {_seconds(first.heartbeat_timeout_s)} pass without a heartbeat"
    else:
        detect = f"once the {_seconds(first.start_to_close_s)} start-to-close timeout expires"
    what = _in_flight(activities)
    retry = f", after a {_seconds(first.retry_in_s)} backoff" if first.retry_in_s else ""
    text = f"{what} retried on another worker {detect}{retry}."
    if first.activity_type == "generate_full_text":
        response = first.resumable_response
        text += (
            f" Its heartbeat names the provider's background generation {response}: the retry "
            "re-attaches to it and continues after the last delta instead of asking again."
            if response
            else " The LLM is asked again from the start: the answer is only in the history "
            "once this activity has completed."
        )
    return text


def plan_for(victim: FleetWorker, chats: list[Chat], fleet: Fleet, signame: str) -> list[str]:
    """What killing `victim` does to each chat it holds, in plain words (one entry a line)."""
    survivors = [w.identity for w in fleet.live() if w.identity != victim.identity]
    to = " or ".join(survivors) if survivors else "the next worker to start (no other is alive)"
    graceful = signame == "TERM"
    lines: list[str] = []
    for chat in chats:
        saved = (
            f"{chat.chunks_saved}/{chat.total_chunks} chunks saved, " if chat.total_chunks else ""
        )
        lines.append(
            f"chat {chat.workflow_id}: {chat.stage or '?'}, {saved}"
            f"history {chat.history_length} events"
        )
        if chat.workflow_worker == victim.identity:
            skipped = [a for a in chat.completed_activities if a not in _BOOKKEEPING]
            listed = " or ".join(
                [", ".join(skipped[:-1]), skipped[-1]] if len(skipped) > 1 else skipped
            )
            not_again = (
                f"does not run {listed} again (their results are in the history)"
                if skipped
                else "repeats no completed activity"
            )
            if graceful:
                handover = (
                    "it stops polling, lets its in-flight activities finish (up to "
                    f"{_seconds(contract.GRACEFUL_SHUTDOWN.total_seconds())}) and then releases "
                    "the "
                    f"chat's workflow, no timeout: {to} replays the history"
                )
            elif chat.workflow_task == "started":
                handover = (
                    "this worker holds the chat's workflow and is in the middle of a workflow "
                    f"task, which times out after {_seconds(chat.workflow_task_timeout_s)}; "
                    f"{to} then replays the history"
                )
            else:
                handover = (
                    "this worker holds the chat's workflow (sticky): the chat's next workflow "
                    "task waits at most "
                    f"{_seconds(contract.STICKY_SCHEDULE_TO_START.total_seconds())} on this "
                    f"worker's queue, then goes to {to}, which replays the history"
                )
            lines.append(
                _wrap(
                    f"{handover} ({chat.history_length} events now, more by then), "
                    f"{not_again}, and {_resume_point(chat, graceful=graceful)}."
                )
            )
        mine = [a for a in chat.activities if a.running and a.worker == victim.identity]
        groups: dict[tuple[str, float | None, float | None], list[fl.RunningActivity]] = {}
        for activity in mine:
            key = (activity.activity_type, activity.heartbeat_timeout_s, activity.retry_in_s)
            groups.setdefault(key, []).append(activity)
        for group in groups.values():
            if graceful:
                lines.append(
                    _wrap(
                        f"{_in_flight(group)} allowed to finish first (up to "
                        f"{_seconds(contract.GRACEFUL_SHUTDOWN.total_seconds())})."
                    )
                )
            else:
                lines.append(_wrap(_activity_plan(group)))
    if not chats:
        lines.append("It runs no chat right now: nothing to recover.")
    else:
        lines.append(
            _wrap(
                "Nothing is lost or saved twice: saved chunks stay in PostgreSQL, and a "
                "retried save_chunk of a chunk already written inserts nothing.",
                indent="",
            )
        )
    return lines


async def _wait_for_chunk(session: Session, workflow_id: str, chunk: int, timeout_s: float) -> None:
    """Wait until the chat has saved `chunk` chunks (the `--at-chunk` option)."""
    deadline = time.monotonic() + timeout_s
    while True:
        # PostgreSQL first: a query waits behind the workflow's tasks on a busy worker
        # (100-200 ms while chunks are being saved), a row count does not.
        stage, saved, total = await fl.saved_chunks(session.client, workflow_id, session.store)
        if stage in ("completed", "failed", "cancelled") or (total and saved >= total):
            raise Refused(f"chat {workflow_id} ended ({stage}) before chunk {chunk}")
        if saved >= chunk:
            return
        if time.monotonic() > deadline:
            raise Refused(f"chat {workflow_id} did not reach chunk {chunk} within {timeout_s:g} s")
        await asyncio.sleep(0.02)


async def _ensure_running(session: Session, workflow_id: str) -> WorkflowExecutionDescription:
    try:
        description = await session.client.get_workflow_handle(workflow_id).describe(
            rpc_timeout=fl.RPC_TIMEOUT
        )
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise Refused(f"no chat {workflow_id} in Temporal") from err
        raise
    if description.status != WorkflowExecutionStatus.RUNNING:
        status = description.status.name.lower() if description.status else "unknown"
        raise Refused(f"chat {workflow_id} is not running (it is {status})")
    return description


async def _live_listing(session: Session) -> str:
    seen = await fl.pollers(session.client, session.settings.task_queue)
    live = [
        f"  {w.identity} (pid {w.pid})"
        for w in (fl.worker_from_identity(i) for i in sorted(seen))
        if w.alive
    ]
    return f"live workers on {fl.this_host()}:\n" + ("\n".join(live) or "  (none)")


async def _victim(session: Session, args: argparse.Namespace) -> FleetWorker:
    """The worker to kill: named, or the one running the chat; refused unless it is a live
    worker process on this host."""
    if args.chat:
        identity = await fl.workflow_worker(session.client, args.chat)
        if identity is None:  # no workflow task ran yet: the worker running an activity
            description = await _ensure_running(session, args.chat)
            identity = next(
                (
                    p.last_worker_identity
                    for p in description.raw_description.pending_activities
                    if p.last_worker_identity
                ),
                None,
            )
        if identity is None:
            raise Refused(f"no worker runs chat {args.chat} yet\n{await _live_listing(session)}")
        victim = fl.worker_from_identity(identity)
        if victim.alive is False:
            raise Refused(
                f"{identity}, which runs chat {args.chat}, is already gone: another worker "
                f"takes the chat over\n{await _live_listing(session)}"
            )
    else:
        seen = await fl.pollers(session.client, session.settings.task_queue)
        workers = [fl.worker_from_identity(i) for i in seen]
        matches = [w for w in workers if args.worker in (w.identity, str(w.pid))]
        found = next((w for w in matches if w.alive is not False), None)
        if found is None:
            raise Refused(
                f"no live worker {args.worker!r} polls {session.settings.task_queue}\n"
                f"{await _live_listing(session)}"
            )
        victim = found
    if not victim.local or victim.pid is None:
        raise Refused(
            f"{victim.identity} runs on host {victim.host!r}, not on this one "
            f"({fl.this_host()}): kill it there"
        )
    if not fl.is_worker_process(victim.pid):
        raise Refused(
            f"pid {victim.pid} is not a live durable-chat worker on this host\n"
            f"{await _live_listing(session)}"
        )
    return victim


async def _held_chats(
    session: Session, victim: FleetWorker, only_chat: str | None, *, frozen: bool
) -> tuple[Fleet, list[Chat]]:
    """The fleet now, and every chat `victim` holds (workflow or activity), read in full."""
    fleet = await fl.snapshot(
        session.client,
        session.settings,
        session.store,
        session.database,
        only_chat=only_chat,
        query_progress=not frozen,
    )
    wanted = [c.workflow_id for c in fleet.chats if c.runs_on(victim.identity)]
    if only_chat and only_chat not in wanted:
        wanted.append(only_chat)
    first = {c.workflow_id: c for c in fleet.chats}
    chats = []
    for workflow_id in wanted:
        chat = await fl.inspect_chat(
            session.client, workflow_id, session.store, full_history=True, query_progress=False
        )
        chat.chunks_saved = chat.chunks_completed  # results in the history: exact
        if workflow_id in first and first[workflow_id].stage is not None:
            chat.stage = first[workflow_id].stage
            chat.total_chunks = first[workflow_id].total_chunks or chat.total_chunks
        chats.append(chat)
    return fleet, chats


async def cmd_kill(args: argparse.Namespace, out: TextIO) -> int:
    signame = args.signal.upper().removeprefix("SIG")
    if signame not in ("KILL", "TERM"):
        raise Refused("--signal must be KILL or TERM")
    session, pool = await _open(args)
    try:
        if args.chat:
            await _ensure_running(session, args.chat)
        if args.chat and args.at_chunk is not None:
            print(f"waiting for chat {args.chat} to save {args.at_chunk} chunks…", file=out)
            await _wait_for_chunk(session, args.chat, args.at_chunk, args.timeout)
        victim = await _victim(session, args)
        assert victim.pid is not None
        pid = victim.pid
        # With SIGKILL the worker is first stopped (SIGSTOP) while its chats are read, so
        # the plan describes exactly the state it dies in: a stopped worker schedules
        # nothing more. The SIGKILL follows within milliseconds.
        frozen = signame == "KILL" and not args.dry_run
        if frozen:
            os.kill(pid, signal.SIGSTOP)
        try:
            fleet, chats = await _held_chats(session, victim, args.chat, frozen=frozen)
            flag = "-9" if signame == "KILL" else "-TERM"
            supervised = _supervisor(pid) == "circus"
            note = ", supervised by circus: `make up` starts a replacement" if supervised else ""
            print(f"kill {flag} {pid}  ({victim.identity}{note})", file=out)
            for line in plan_for(victim, chats, fleet, signame):
                print(line, file=out)
            if args.dry_run:
                print("(dry run: no signal sent)", file=out)
                return 0
            os.kill(pid, getattr(signal, f"SIG{signame}"))
            killed_at = datetime.now(UTC)
            frozen = False
        finally:
            if frozen:  # something failed before the kill: let the worker go on
                os.kill(pid, signal.SIGCONT)
        print(f"sent SIG{signame} to {pid} at {killed_at:%H:%M:%S}", file=out, flush=True)
        if args.follow:
            for chat in chats:
                await _follow(session, chat, victim.identity, killed_at, args.timeout, out)
    finally:
        await _close(pool)
    return 0


async def _follow(
    session: Session, chat: Chat, victim: str, killed_at: datetime, timeout_s: float, out: TextIO
) -> None:
    """Watch the chat's history until another worker has taken it over, then until it ends."""
    deadline = time.monotonic() + timeout_s
    handle = session.client.get_workflow_handle(chat.workflow_id, run_id=chat.run_id)
    if chat.workflow_worker == victim:
        takeover = None
        while takeover is None and time.monotonic() < deadline:
            takeover = await _takeover(session, chat, victim)
            if takeover is None:
                await asyncio.sleep(0.2)
        if takeover is None:
            print(
                f"no other worker took chat {chat.workflow_id} over within {timeout_s:g} s",
                file=out,
            )
            return
        identity, event_id, at, next_chunk = takeover
        if next_chunk is None:
            where = "finished the chat"
        elif chat.stage == "checkpointing":
            where = f"resumed at chunk {next_chunk}"
        else:
            where = f"went on to checkpointing, from chunk {next_chunk}"
        print(
            f"{identity} took the chat over {(at - killed_at).total_seconds():.1f} s after the "
            f"kill: it replayed the history up to event {event_id} and {where}",
            file=out,
            flush=True,
        )
    try:
        await asyncio.wait_for(handle.result(), timeout=max(1.0, deadline - time.monotonic()))
    except TimeoutError:
        print(f"chat {chat.workflow_id} still running after {timeout_s:g} s", file=out)
        return
    except Exception as err:  # the chat failed or was cancelled: say so
        print(f"chat {chat.workflow_id} ended: {err}", file=out)
        return
    if session.store is None:
        print(f"chat {chat.workflow_id} completed", file=out)
        return
    rows = await session.store.get_chunks(chat.workflow_id, 0, limit=100_000)
    by_worker = Counter(r.worker for r in rows)
    written = ", ".join(f"{n} by {w}" for w, n in by_worker.most_common())
    print(
        f"chat {chat.workflow_id} completed: {len(rows)} chunks, each saved once ({written})",
        file=out,
    )


async def _takeover(
    session: Session, chat: Chat, victim: str
) -> tuple[str, int, datetime, int | None] | None:
    """(identity, event id, time, first chunk it scheduled) of the first workflow task that
    another worker started after the kill; None while that is not known yet."""
    events = []
    async for event in fl.events_newest_first(session.client, chat.workflow_id, chat.run_id):
        if event.event_id <= chat.history_length:
            break
        events.append(event)
    events.reverse()
    takeover: tuple[str, int, datetime] | None = None
    for event in events:
        if takeover is None:
            identity = event.workflow_task_started_event_attributes.identity
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED and identity not in (
                "",
                victim,
            ):
                takeover = (identity, event.event_id, event.event_time.ToDatetime(UTC))
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attributes = event.activity_task_scheduled_event_attributes
            if attributes.activity_type.name == "save_chunk" and attributes.input.payloads:
                value = fl.payload_value(attributes.input.payloads[0])
                if isinstance(value, dict) and isinstance(value.get("index"), int):
                    return (*takeover, value["index"])
        elif event.event_type in _CLOSED:
            return (*takeover, None)
    nothing_left = (
        chat.total_chunks is not None and (chat.chunks_scheduled or 0) >= chat.total_chunks
    )
    if takeover is not None and chat.stage == "checkpointing" and nothing_left:
        return (*takeover, None)
    return None  # not taken over yet, or its first save_chunk is not scheduled yet


# --- entry point -------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="durable-chat",
        description="Run the local durable-chat stack and watch, or kill, its workers.",
    )
    top.add_argument("--temporal-address", help="Temporal frontend (default: TEMPORAL_ADDRESS)")
    top.add_argument("--database-url", help="PostgreSQL (default: DATABASE_URL)")
    sub = top.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the whole stack in this terminal (make up)")
    up.add_argument("--workers", type=int, help="number of workers (default: WORKERS or 2)")

    workers = sub.add_parser("workers", help="live workers and the chats each is running")
    workers.add_argument("--json", action="store_true", help="machine-readable output")

    kill = sub.add_parser("kill", help="kill a worker (kill -9), by identity, pid or chat")
    target = kill.add_mutually_exclusive_group(required=True)
    target.add_argument("worker", nargs="?", help="worker identity (worker-<pid>@<host>) or pid")
    target.add_argument("--chat", metavar="WORKFLOW_ID", help="the worker running this chat")
    kill.add_argument("--signal", default="KILL", help="KILL (default) or TERM")
    kill.add_argument(
        "--at-chunk", type=int, metavar="N", help="with --chat: first wait until N chunks are saved"
    )
    kill.add_argument(
        "--follow",
        action="store_true",
        help="then watch the chat until another worker takes it over and it completes",
    )
    kill.add_argument("--dry-run", action="store_true", help="say what would happen, send nothing")
    kill.add_argument(
        "--timeout", type=float, default=120, help="seconds --at-chunk and --follow wait (120)"
    )
    return top


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """The `durable-chat` console script. With `argv` it returns the exit code; without (the
    console script, `python -m devstack.cli`) it ends the process with it, skipping the
    interpreter's teardown: Temporal's client threads can abort a short-lived process that
    finalizes while they run (temporalio/sdk-python#300)."""
    code = _main(argv, out)
    if argv is None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _main(argv: Sequence[str] | None, out: TextIO | None) -> int:
    args = parser().parse_args(argv)
    stream = out or sys.stdout
    if args.command == "kill" and args.at_chunk is not None and not args.chat:
        print("durable-chat: --at-chunk needs --chat", file=sys.stderr)
        return 1
    try:
        if args.command == "up":
            return cmd_up(args, stream)
        if args.command == "workers":
            return asyncio.run(cmd_workers(args, stream))
        return asyncio.run(cmd_kill(args, stream))
    except TemporalUnreachableError as err:
        print(f"durable-chat: {err}", file=sys.stderr)
        return 2
    except Refused as err:
        print(f"durable-chat: {err}", file=sys.stderr)
        return 1
    except RPCError as err:
        print(f"durable-chat: Temporal answered an error: {err}", file=sys.stderr)
        return 2 if err.status == RPCStatusCode.UNAVAILABLE else 1


if __name__ == "__main__":
    sys.exit(main())
