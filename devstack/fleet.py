"""What the worker fleet is doing, read from Temporal (and PostgreSQL): behind `durable-chat`.

Sources, all of them first-hand:
- the pollers of `chat-queue` (`DescribeTaskQueue`, workflow and activity types): every
  worker identity Temporal has seen polling, with its last poll. Temporal keeps a poller
  listed for a few minutes after its process is gone, so liveness is checked on the pid;
- the running `ChatStreamingWorkflow`s (visibility), and for each: its description
  (activities in flight, with the identity of the worker running each attempt), its
  history (the worker that ran the last workflow task holds the chat's workflow state,
  sticky; which `save_chunk` activities are already scheduled), and its `progress`
  query (short timeout) or, when no worker answers, its PostgreSQL row.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from temporalio.api.common.v1 import Payload, WorkflowExecution
from temporalio.api.enums.v1 import (
    DescribeTaskQueueMode,
    EventType,
    PendingActivityState,
    PendingWorkflowTaskState,
    TaskQueueKind,
    TaskQueueType,
)
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.taskqueue.v1 import PollerInfo, TaskQueue
from temporalio.api.workflow.v1 import PendingActivityInfo
from temporalio.api.workflowservice.v1 import (
    DescribeTaskQueueRequest,
    GetWorkflowExecutionHistoryReverseRequest,
)
from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.service import RPCError, RPCStatusCode

from common.codec import EncryptionCodec, PayloadKeyError, data_converter, parse_keys
from common.contract import (
    CHAT_WORKFLOW,
    parse_identity,
)
from common.settings import Settings
from storage import ChatStore

WORKFLOW_TYPE = CHAT_WORKFLOW
RPC_TIMEOUT = timedelta(seconds=5)
PROGRESS_QUERY_TIMEOUT = timedelta(seconds=1)


class TemporalUnreachableError(Exception):
    """Temporal did not answer: the CLI says so in one line and exits with 2."""


# --- workers -----------------------------------------------------------------------------


def this_host() -> str:
    return socket.gethostname()


def is_worker_process(pid: int) -> bool:
    """True when `pid` is a live (not zombie) durable-chat worker process on this host.

    Checks the command line where /proc exists, so a pid reused by another program after
    the worker died is never mistaken for the worker (and never killed).
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    if not Path("/proc/self").exists():
        return True  # no /proc (macOS): the pid exists, trust the identity
    proc = Path(f"/proc/{pid}")
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X") and "worker.py" in cmdline


@dataclass
class RunningActivity:
    """An activity of a chat that is scheduled or running (a pending activity)."""

    activity_id: str
    activity_type: str
    summary: str
    state: str  # scheduled | started | cancel_requested | paused
    attempt: int
    worker: str | None  # identity that runs (or last ran) the attempt
    started_at: datetime | None
    last_heartbeat_at: datetime | None
    heartbeat: Any  # last heartbeat details: characters so far, or {response_id, seq, chars}
    start_to_close_s: float | None
    heartbeat_timeout_s: float | None
    retry_in_s: float | None  # backoff before the next attempt, if this one fails

    @property
    def running(self) -> bool:
        return self.state == "started"

    @property
    def chars_so_far(self) -> int | None:
        """Characters generated so far, from generate_full_text's heartbeat."""
        value = self.heartbeat.get("chars") if isinstance(self.heartbeat, dict) else self.heartbeat
        return value if isinstance(value, int) else None

    @property
    def resumable_response(self) -> str | None:
        """The provider's id of a resumable (background) generation, when it heartbeats one."""
        value = self.heartbeat.get("response_id") if isinstance(self.heartbeat, dict) else None
        return value if isinstance(value, str) else None


@dataclass
class Chat:
    """One running chat, as Temporal (and PostgreSQL) see it now."""

    workflow_id: str
    run_id: str
    stage: str | None = None
    chunks_saved: int | None = None
    total_chunks: int | None = None
    percent: float | None = None
    progress_source: str = "none"  # query | postgres | none
    history_length: int = 0
    workflow_worker: str | None = None  # ran the last workflow task: holds the workflow
    workflow_task: str = "none"  # none | scheduled | started (the pending workflow task)
    workflow_task_timeout_s: float | None = None
    activities: list[RunningActivity] = field(default_factory=list)
    chunks_scheduled: int | None = None  # save_chunk activities scheduled so far
    completed_activities: list[str] = field(default_factory=list)  # full history only
    chunks_completed: int | None = None  # save_chunk results in the history (full only)
    last_chunk: dict[str, Any] | None = None  # from PostgreSQL: {index, worker}

    def runs_on(self, identity: str) -> list[str]:
        """What of this chat worker `identity` runs: 'workflow' and activity summaries."""
        parts = ["workflow"] if self.workflow_worker == identity else []
        parts += [a.summary for a in self.activities if a.running and a.worker == identity]
        return parts

    @property
    def progress_text(self) -> str:
        if self.stage is None:
            return "?"
        if self.stage == "checkpointing" and self.total_chunks:
            return f"{self.chunks_saved}/{self.total_chunks} chunks"
        if self.stage == "generating":
            chars = next(
                (
                    a.chars_so_far
                    for a in self.activities
                    if a.activity_type == "generate_full_text" and a.chars_so_far is not None
                ),
                None,
            )
            return f"{chars} chars so far" if chars is not None else "-"
        return "-"


@dataclass
class FleetWorker:
    identity: str
    pid: int | None
    host: str | None
    local: bool
    alive: bool | None  # None: on another host, cannot tell
    last_poll: datetime | None
    polls: list[str]  # workflow, activity
    chats: list[tuple[str, list[str]]] = field(default_factory=list)  # (workflow id, runs)


@dataclass
class Fleet:
    temporal_address: str
    namespace: str
    task_queue: str
    host: str
    workers: list[FleetWorker]
    chats: list[Chat]
    database: str  # ok | unavailable: <reason>

    def worker(self, identity: str) -> FleetWorker | None:
        return next((w for w in self.workers if w.identity == identity), None)

    def live(self) -> list[FleetWorker]:
        return [w for w in self.workers if w.alive]

    def to_json(self) -> dict[str, Any]:
        def value(obj: Any) -> Any:
            if isinstance(obj, datetime):
                return obj.isoformat()
            if isinstance(obj, list | tuple):
                return [value(v) for v in obj]
            if isinstance(obj, dict):
                return {k: value(v) for k, v in obj.items()}
            if hasattr(obj, "__dataclass_fields__"):
                return {k: value(getattr(obj, k)) for k in obj.__dataclass_fields__}
            return obj

        return {
            "temporal": self.temporal_address,
            "namespace": self.namespace,
            "task_queue": self.task_queue,
            "host": self.host,
            "database": self.database,
            "workers": [
                {**value(w), "chats": [{"workflow_id": c, "runs": r} for c, r in w.chats]}
                for w in self.workers
            ],
            "chats": [value(c) for c in self.chats],
        }


# --- Temporal ----------------------------------------------------------------------------


async def connect(settings: Settings) -> Client:
    """A client for `settings.temporal_address`; TemporalUnreachableError when it is down."""
    global _codec
    _codec = payload_codec(settings)
    try:
        return await asyncio.wait_for(
            Client.connect(
                settings.temporal_address,
                namespace=settings.temporal_namespace,
                connect_timeout=timedelta(seconds=3),
                data_converter=data_converter(_codec),
            ),
            timeout=6,
        )
    except (RuntimeError, TimeoutError, OSError) as err:
        raise TemporalUnreachableError(
            f"Temporal is unreachable at {settings.temporal_address} "
            "(is the stack up? set TEMPORAL_ADDRESS otherwise)"
        ) from err


async def pollers(client: Client, task_queue: str) -> dict[str, tuple[datetime | None, list[str]]]:
    """identity -> (last poll, queue types polled) for every poller of `task_queue`.

    A task queue has several partitions and a worker's polls land on any of them, so the
    pollers are asked for across all partitions ("enhanced" mode); a server without that
    mode is asked partition by partition (the root and `/_sys/<queue>/1..3`).
    """
    found: dict[str, tuple[datetime | None, list[str]]] = {}
    names = {
        TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW: "workflow",
        TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY: "activity",
    }

    def add(poller: PollerInfo, kind: str) -> None:
        seen = (
            poller.last_access_time.ToDatetime(UTC) if poller.HasField("last_access_time") else None
        )
        last, kinds = found.get(poller.identity, (None, []))
        if seen is not None and (last is None or seen > last):
            last = seen
        found[poller.identity] = (last, kinds if kind in kinds else [*kinds, kind])

    try:
        response = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=task_queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
                api_mode=DescribeTaskQueueMode.DESCRIBE_TASK_QUEUE_MODE_ENHANCED,
                task_queue_types=list(names),
                report_pollers=True,
            ),
            timeout=RPC_TIMEOUT,
        )
        for version in response.versions_info.values():
            for queue_type, info in version.types_info.items():
                for poller in info.pollers:
                    add(poller, names.get(TaskQueueType.ValueType(queue_type), str(queue_type)))
        return found
    except RPCError as err:
        if err.status == RPCStatusCode.UNAVAILABLE:
            raise
    for name in (task_queue, *(f"/_sys/{task_queue}/{n}" for n in (1, 2, 3))):
        for queue_type, kind in names.items():
            try:
                legacy = await client.workflow_service.describe_task_queue(
                    DescribeTaskQueueRequest(
                        namespace=client.namespace,
                        task_queue=TaskQueue(name=name, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
                        task_queue_type=queue_type,
                    ),
                    timeout=RPC_TIMEOUT,
                )
            except RPCError:
                if name == task_queue:
                    raise
                continue  # no such partition
            for poller in legacy.pollers:
                add(poller, kind)
    return found


async def running_chat_ids(client: Client, limit: int = 200) -> list[str]:
    query = f"WorkflowType='{WORKFLOW_TYPE}' AND ExecutionStatus='Running'"
    return [
        execution.id
        async for execution in client.list_workflows(query, limit=limit, rpc_timeout=RPC_TIMEOUT)
    ]


def payload_codec(settings: Settings) -> EncryptionCodec | None:
    """The codec of this machine's chats: PAYLOAD_ENCRYPTION_KEYS, or under `make up`
    the key it generated (DATA_DIR/credentials.json, as local-1)."""
    codec = settings.payload_codec()
    stored = settings.data_dir / "credentials.json"
    if codec is None and stored.exists():
        key = json.loads(stored.read_text()).get("payload_key")
        if key:
            codec = EncryptionCodec(parse_keys(f"local-1:{key}"), "local-1")
    return codec


# The codec of the stack `connect` was last called for (the CLI talks to one stack).
_codec: EncryptionCodec | None = None


def payload_value(payload: Payload) -> Any:
    """The JSON value of a payload, decrypted first when it is encrypted."""
    codec = _codec
    if codec is not None:
        try:
            payload = codec.decrypt(payload)
        except PayloadKeyError:
            return None
    if payload.metadata.get("encoding") != b"json/plain":
        return None
    try:
        return json.loads(payload.data)
    except ValueError:
        return None


def _seconds(duration: Any) -> float | None:
    value: float = duration.ToTimedelta().total_seconds()
    return value if value > 0 else None


def _retry_in(info: PendingActivityInfo) -> float | None:
    """Backoff before the attempt after `info.attempt`, from the activity's retry policy."""
    policy = info.activity_options.retry_policy
    initial = _seconds(policy.initial_interval)
    if initial is None:
        return None
    delay = initial * float(policy.backoff_coefficient or 2.0) ** max(0, info.attempt - 1)
    maximum = _seconds(policy.maximum_interval)
    return min(delay, maximum) if maximum else delay


_ACTIVITY_STATES = {
    PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED: "scheduled",
    PendingActivityState.PENDING_ACTIVITY_STATE_STARTED: "started",
    PendingActivityState.PENDING_ACTIVITY_STATE_CANCEL_REQUESTED: "cancel_requested",
}


async def events_newest_first(
    client: Client, workflow_id: str, run_id: str = "", *, page_size: int = 500
) -> AsyncIterator[HistoryEvent]:
    """The chat's history from its last event backwards, a page at a time."""
    token = b""
    while True:
        page = await client.workflow_service.get_workflow_execution_history_reverse(
            GetWorkflowExecutionHistoryReverseRequest(
                namespace=client.namespace,
                execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id),
                maximum_page_size=page_size,
                next_page_token=token,
            ),
            timeout=RPC_TIMEOUT,
        )
        for event in page.history.events:
            yield event
        token = page.next_page_token
        if not token:
            return


async def _read_history(
    client: Client, chat: Chat, activity_ids: set[str], *, full: bool
) -> tuple[dict[str, str], dict[str, str]]:
    """Fill `chat.workflow_worker`, `chunks_scheduled` (and, with `full`, the completed
    activity types) from the history, newest event first; stop early unless `full`.

    Returns (activity id -> type, activity id -> summary) for the pending activities.
    """
    types: dict[str, str] = {}
    summaries: dict[str, str] = {}
    completed_events: set[int] = set()
    completed: list[str] = []
    chunks_completed = 0
    async for event in events_newest_first(client, chat.workflow_id, chat.run_id):
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            identity = event.workflow_task_completed_event_attributes.identity
            chat.workflow_worker = chat.workflow_worker or identity or None
        elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            identity = event.workflow_task_started_event_attributes.identity
            chat.workflow_worker = chat.workflow_worker or identity or None
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            completed_events.add(event.activity_task_completed_event_attributes.scheduled_event_id)
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attributes = event.activity_task_scheduled_event_attributes
            name = attributes.activity_type.name
            summary = (
                payload_value(event.user_metadata.summary)
                if event.user_metadata.HasField("summary")
                else None
            )
            if attributes.activity_id in activity_ids:
                types[attributes.activity_id] = name
                summaries[attributes.activity_id] = str(summary or name)
            if event.event_id in completed_events:
                chunks_completed += name == "save_chunk"
                if name not in completed:
                    completed.append(name)
            if name == "save_chunk" and chat.chunks_scheduled is None:
                chunk = (
                    payload_value(attributes.input.payloads[0])
                    if attributes.input.payloads
                    else None
                )
                if isinstance(chunk, dict) and isinstance(chunk.get("index"), int):
                    chat.chunks_scheduled = chunk["index"] + 1
        if (
            not full
            and chat.workflow_worker is not None
            and chat.chunks_scheduled is not None
            and activity_ids <= summaries.keys()
        ):
            break
    if full:
        chat.completed_activities = list(reversed(completed))
        chat.chunks_completed = chunks_completed
        if chat.chunks_scheduled is None:
            chat.chunks_scheduled = 0
    return types, summaries


async def workflow_worker(client: Client, workflow_id: str) -> str | None:
    """Identity of the worker that ran the chat's last workflow task: it holds the
    workflow (its cached state, and the sticky queue the next task goes to)."""
    async for event in events_newest_first(client, workflow_id, page_size=50):
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            identity = event.workflow_task_completed_event_attributes.identity
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            identity = event.workflow_task_started_event_attributes.identity
        else:
            continue
        if identity:
            return identity
    return None


async def query_progress(
    client: Client, workflow_id: str, store: ChatStore | None
) -> tuple[str | None, int, int | None]:
    """(stage, chunks saved, total chunks): from the `progress` query, else PostgreSQL."""
    try:
        progress = await client.get_workflow_handle(workflow_id).query(
            "progress", rpc_timeout=PROGRESS_QUERY_TIMEOUT
        )
        if isinstance(progress, dict):
            return (
                progress.get("stage"),
                int(progress.get("chunks_saved") or 0),
                progress.get("total_chunks") or None,
            )
    except (RPCError, WorkflowQueryFailedError, TimeoutError):
        pass
    return await _stored_progress(workflow_id, store) or (None, 0, None)


async def saved_chunks(
    client: Client, workflow_id: str, store: ChatStore | None
) -> tuple[str | None, int, int | None]:
    """(stage, chunks saved, total chunks) from PostgreSQL, else from the `progress` query."""
    return await _stored_progress(workflow_id, store) or await query_progress(
        client, workflow_id, None
    )


async def _stored_progress(
    workflow_id: str, store: ChatStore | None
) -> tuple[str, int, int | None] | None:
    """(stage, chunks saved, total chunks) from the generation row; None without one or
    while PostgreSQL does not answer."""
    if store is None:
        return None
    try:
        row = await store.get_generation(workflow_id)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        return None
    return None if row is None else (row.stage.value, row.chunks_saved, row.total_chunks)


async def inspect_chat(
    client: Client,
    workflow_id: str,
    store: ChatStore | None,
    *,
    full_history: bool = False,
    query_progress: bool = True,
) -> Chat:
    """Everything the CLI shows about one running chat.

    `full_history` reads the whole history (completed activities, chunks saved);
    without `query_progress`, progress comes from PostgreSQL only (no worker is asked).
    """
    handle = client.get_workflow_handle(workflow_id)
    description = await handle.describe(rpc_timeout=RPC_TIMEOUT)
    raw = description.raw_description
    chat = Chat(
        workflow_id=workflow_id,
        run_id=description.run_id,
        history_length=description.history_length,
        workflow_task_timeout_s=_seconds(raw.execution_config.default_workflow_task_timeout),
    )
    if raw.HasField("pending_workflow_task"):
        chat.workflow_task = (
            "started"
            if raw.pending_workflow_task.state
            == PendingWorkflowTaskState.PENDING_WORKFLOW_TASK_STATE_STARTED
            else "scheduled"
        )
    pending = list(raw.pending_activities)
    types, summaries = await _read_history(
        client, chat, {p.activity_id for p in pending}, full=full_history
    )
    for info in pending:
        chat.activities.append(
            RunningActivity(
                activity_id=info.activity_id,
                activity_type=info.activity_type.name or types.get(info.activity_id, "?"),
                summary=summaries.get(info.activity_id, info.activity_type.name),
                state=_ACTIVITY_STATES.get(info.state, "paused" if info.paused else "?"),
                attempt=info.attempt,
                worker=info.last_worker_identity or None,
                started_at=info.last_started_time.ToDatetime(UTC)
                if info.HasField("last_started_time")
                else None,
                last_heartbeat_at=info.last_heartbeat_time.ToDatetime(UTC)
                if info.HasField("last_heartbeat_time")
                else None,
                heartbeat=(
                    payload_value(info.heartbeat_details.payloads[-1])
                    if info.heartbeat_details.payloads
                    else None
                ),
                start_to_close_s=_seconds(info.activity_options.start_to_close_timeout),
                heartbeat_timeout_s=_seconds(info.activity_options.heartbeat_timeout),
                retry_in_s=_retry_in(info),
            )
        )
    await _fill_progress(client, chat, store, query=query_progress)
    return chat


async def _fill_progress(
    client: Client, chat: Chat, store: ChatStore | None, *, query: bool
) -> None:
    """Stage and chunks from the live workflow (`progress` query, 1 s), else PostgreSQL."""
    handle = client.get_workflow_handle(chat.workflow_id, run_id=chat.run_id)
    try:
        progress = (
            await handle.query("progress", rpc_timeout=PROGRESS_QUERY_TIMEOUT) if query else None
        )
        if isinstance(progress, dict):
            chat.stage = progress.get("stage")
            chat.chunks_saved = progress.get("chunks_saved")
            chat.total_chunks = progress.get("total_chunks") or None
            chat.percent = progress.get("percent")
            chat.progress_source = "query"
    except (RPCError, WorkflowQueryFailedError, TimeoutError):
        pass  # no worker answered in time: PostgreSQL below
    if store is None:
        return
    try:
        row = await store.get_generation(chat.workflow_id)
        if row is None:
            return
        if chat.progress_source == "none":
            chat.stage = row.stage.value
            chat.chunks_saved = row.chunks_saved
            chat.total_chunks = row.total_chunks
            if row.total_chunks:
                chat.percent = round(100.0 * row.chunks_saved / row.total_chunks, 1)
            chat.progress_source = "postgres"
        if row.chunks_saved:
            last = await store.get_chunks(chat.workflow_id, row.chunks_saved - 1, limit=1)
            if last:
                chat.last_chunk = {"index": last[0].id, "worker": last[0].worker}
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        pass


async def open_store(settings: Settings) -> tuple[ChatStore | None, asyncpg.Pool | None, str]:
    """A ChatStore on DATABASE_URL, or (None, None, why) when PostgreSQL does not answer."""
    try:
        pool = await asyncpg.create_pool(
            settings.database_url, min_size=1, max_size=4, timeout=3, command_timeout=5
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as err:
        return None, None, f"unavailable: {type(err).__name__}: {err}".strip()
    return ChatStore(pool), pool, "ok"


def worker_from_identity(
    identity: str, last_poll: datetime | None = None, polls: Iterable[str] = ()
) -> FleetWorker:
    parsed = parse_identity(identity)
    host = this_host()
    pid, worker_host = parsed if parsed else (None, None)
    local = worker_host == host
    alive = is_worker_process(pid) if local and pid is not None else None
    return FleetWorker(identity, pid, worker_host, local, alive, last_poll, list(polls))


async def snapshot(
    client: Client,
    settings: Settings,
    store: ChatStore | None,
    database: str,
    *,
    only_chat: str | None = None,
    full_history: bool = False,
    query_progress: bool = True,
) -> Fleet:
    """Workers polling the chat queue and the running chats, with who runs what."""
    seen = await pollers(client, settings.task_queue)
    ids = [only_chat] if only_chat else await running_chat_ids(client)
    semaphore = asyncio.Semaphore(8)

    async def one(workflow_id: str) -> Chat | None:
        async with semaphore:
            try:
                return await inspect_chat(
                    client,
                    workflow_id,
                    store,
                    full_history=full_history,
                    query_progress=query_progress,
                )
            except RPCError:
                if only_chat:
                    raise
                return None  # finished or vanished between the listing and now

    chats = [c for c in await asyncio.gather(*(one(i) for i in ids)) if c is not None]
    workers = {
        identity: worker_from_identity(identity, last, types)
        for identity, (last, types) in seen.items()
    }
    for chat in chats:  # workers that hold a chat but no longer poll (gone) are listed too
        holders = [chat.workflow_worker, *(a.worker for a in chat.activities if a.running)]
        for identity in holders:
            if identity and identity not in workers:
                workers[identity] = worker_from_identity(identity)
    for worker in workers.values():
        worker.chats = [
            (chat.workflow_id, runs) for chat in chats if (runs := chat.runs_on(worker.identity))
        ]
    ordered = sorted(
        workers.values(), key=lambda w: (w.alive is not True, w.host or "", w.pid or 0)
    )
    return Fleet(
        temporal_address=settings.temporal_address,
        namespace=settings.temporal_namespace,
        task_queue=settings.task_queue,
        host=this_host(),
        workers=ordered,
        chats=chats,
        database=database,
    )


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    if moment is None:
        return "-"
    seconds = ((now or datetime.now(UTC)) - moment).total_seconds()
    if seconds < 60:
        return f"{max(seconds, 0):.0f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"
