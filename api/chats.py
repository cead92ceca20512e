"""What the gateway does for a chat, independent of HTTP: start, status, chunks, cancel."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import asyncpg
import structlog
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api import branches
from api.branches import Conversation
from api.schemas import ChatStatus, ChunkOut, ChunkPage, StartChatBody, UsageOut
from common import search_attributes
from common.closes import RunState, closed_state, run_state
from common.contract import (
    CHAT_WORKFLOW,
    PROGRESS_QUERY,
    RECONCILE_WORKFLOW,
    WORKFLOW_TASK_TIMEOUT,
)
from common.errors import (
    ChatNotFoundError,
    ChatNotRetryableError,
    DependencyUnavailableError,
    ModelNotAllowedError,
    RateLimitedError,
)
from common.history import recent_turns
from common.models import ChatRequest, FinishReason, Progress, ReconcileRequest, Stage, Turn
from common.preview import STOPPING_EVENT
from common.settings import Settings
from storage import ChatStore, GenerationRow, LimitsStore, TurnNode

log = structlog.get_logger(__name__)

T = TypeVar("T")
_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncio.TimeoutError)
_IDEMPOTENCY_NAMESPACE = uuid.UUID("5b0d8a1e-6f0e-4c55-9a43-3c1f1c2f7d10")

# Failures a new attempt would only repeat: the prompt or the request itself was refused.
_FINAL_ERROR_TYPES = {"InvalidPromptError", "ProviderRejectedError", "ChunkConflictError"}
# Ends a user may ask again after: a failure not in _FINAL_ERROR_TYPES, or an operator's
# terminate and a timeout.
_RETRYABLE_STAGES = {Stage.FAILED, Stage.TERMINATED, Stage.TIMED_OUT}

_STATUS_NAMES = {
    WorkflowExecutionStatus.RUNNING: "running",
    WorkflowExecutionStatus.COMPLETED: "completed",
    WorkflowExecutionStatus.FAILED: "failed",
    WorkflowExecutionStatus.CANCELED: "cancelled",
    WorkflowExecutionStatus.TERMINATED: "terminated",
    WorkflowExecutionStatus.CONTINUED_AS_NEW: "continued_as_new",
    WorkflowExecutionStatus.TIMED_OUT: "timed_out",
}


def check_model(settings: Settings, model: str | None) -> str:
    """The model to use: `model`, or the default; one outside ALLOWED_MODELS is a 422
    that lists the allowed ones."""
    chosen = model or settings.effective_model
    allowed = settings.model_allowlist
    if chosen not in allowed:
        raise ModelNotAllowedError(
            f"The model {chosen[:80]!r} is not allowed on this deployment; allowed: "
            f"{', '.join(allowed)}.",
            param="model",
            code="model_not_found",
        )
    return chosen


def workflow_id_for(user_id: str, idempotency_key: str | None) -> str:
    """`chat-<uuid>`: random, or derived from the caller's idempotency key."""
    if idempotency_key is None:
        return f"chat-{uuid.uuid4()}"
    return f"chat-{uuid.uuid5(_IDEMPOTENCY_NAMESPACE, f'{user_id}:{idempotency_key}')}"


def temporal_ui_link(settings: Settings, workflow_id: str) -> str:
    base = settings.temporal_ui_url.rstrip("/")
    return f"{base}/namespaces/{settings.temporal_namespace}/workflows/{workflow_id}"


def summary_for(prompt: str, model: str, with_prompt: bool = True) -> str:
    """A one-line summary shown for the chat in the Temporal UI: the prompt's first
    words and the model, or (`with_prompt` False: encryption on) the model only."""
    if not with_prompt:
        return f"chat · {model}"
    words = " ".join(prompt.split()[:12])
    if len(words) > 80:
        words = words[:79] + "…"
    return f"{words} · {model}"


async def start_chat(
    client: Client, store: ChatStore, settings: Settings, body: StartChatBody, user_id: str
) -> str:
    """Start a ChatStreamingWorkflow for `body`; return its workflow id at once.

    In a conversation the turn follows the branch the user is on (api.branches): its
    earlier turns are the context, and the new chat becomes the branch's head. With an
    idempotency key, a second identical submit returns the first chat's id (running or
    finished) instead of starting another.
    """
    workflow_id = workflow_id_for(user_id, body.idempotency_key)
    if body.idempotency_key is not None and body.conversation_id:
        existing = await db_call(store.get_generation(workflow_id))
        if existing is not None and existing.prompt != body.prompt:
            # The same message, edited (a UI that keys its starts by message): a new
            # version of that turn, never the old chat's answer to the old text.
            return await regenerate_chat(
                client, store, settings, workflow_id, user_id, body.prompt, _digest(body.prompt)
            )
    turn = NewTurn(prompt=body.prompt, conversation_id=body.conversation_id)
    if body.conversation_id:
        conversation = await _settled_conversation(store, body.conversation_id, user_id)
        turn.parent_id = conversation.head_id
        turn.context = conversation.path(conversation.head_id)
    return await _start_turn(client, store, settings, body, user_id, workflow_id, turn)


# How long a new turn waits for the turn before it: its record to be written (a worker
# behind on its first task), or a stop asked of it to be saved ("stop, then ask").
PREVIOUS_TURN_WAIT_S = 10.0


async def _settled_conversation(
    store: ChatStore, conversation_id: str, user_id: str
) -> Conversation:
    """The conversation, once its head has a record and is not halfway through a stop:
    the next turn's parent and context are then the branch as the user sees it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PREVIOUS_TURN_WAIT_S
    while True:
        conversation = await load_conversation(store, conversation_id, user_id)
        head = conversation.stored_head
        waiting = head is not None and (
            head not in conversation.nodes or await db_call(store.stop_pending(head))
        )
        if not waiting or loop.time() > deadline:
            if waiting:
                log.warning("the previous turn is not settled; going on", head_id=head)
            return conversation
        await asyncio.sleep(0.1)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class NewTurn:
    """What a new chat adds to its conversation, and the branch it follows."""

    prompt: str
    conversation_id: str | None
    parent_id: str | None = None
    variant_of: str | None = None
    continues: str | None = None
    context: list[TurnNode] = field(default_factory=list)
    use_cache: bool = True


async def load_conversation(store: ChatStore, conversation_id: str, user_id: str) -> Conversation:
    nodes = await db_call(store.conversation_chats(conversation_id, user_id))
    head = await db_call(store.conversation_head(conversation_id, user_id))
    return Conversation(nodes, head)


async def _start_turn(
    client: Client,
    store: ChatStore,
    settings: Settings,
    body: StartChatBody,
    user_id: str,
    workflow_id: str,
    turn: NewTurn,
) -> str:
    history: list[Turn] = []
    if turn.context:
        answers = await db_call(store.answers([n.workflow_id for n in turn.context]))
        history, dropped = recent_turns(
            branches.context(turn.context, answers), settings.history_max_chars
        )
        if dropped:
            log.info(
                "conversation history capped",
                workflow_id=workflow_id,
                conversation_id=turn.conversation_id,
                turns_dropped=dropped,
                turns_kept=len(history),
                history_max_chars=settings.history_max_chars,
            )
    model = check_model(settings, body.model)
    request = ChatRequest(
        prompt=turn.prompt,
        conversation_id=turn.conversation_id,
        history=history,
        model=model,
        provider=settings.provider_name,
        max_tokens=body.max_tokens or settings.default_max_tokens,
        temperature=0.7 if body.temperature is None else body.temperature,
        user_id=user_id,
        chunk_target_chars=settings.chunk_target_chars,
        checkpoint_window=settings.checkpoint_window,
        max_prompt_chars=settings.max_prompt_chars,
        use_cache=settings.cache_enabled and body.cache and turn.use_cache,
        cache_ttl_s=settings.cache_ttl_s,
        generation_mode=settings.requested_generation_mode,
        parent_id=turn.parent_id,
        variant_of=turn.variant_of,
        continues=turn.continues,
    )
    keyed = body.idempotency_key is not None
    repeat = keyed and await db_call(store.get_generation(workflow_id)) is not None
    await start_workflow(client, settings, request, workflow_id, keyed)
    if turn.conversation_id and not repeat:  # a repeated request leaves the head alone
        await db_call(store.set_conversation_head(turn.conversation_id, user_id, workflow_id))
    log.info("chat started", workflow_id=workflow_id, model=model, history_turns=len(history) // 2)
    return workflow_id


async def regenerate_chat(
    client: Client,
    store: ChatStore,
    settings: Settings,
    workflow_id: str,
    user_id: str,
    prompt: str | None = None,
    idempotency_key: str | None = None,
) -> str:
    """Another version of a turn: the same prompt asked again without the answer cache
    (regenerate), or a new prompt in its place (edit and resend). Either is a new chat
    with the same parent, so the turn's other versions, and the turns after them, stay."""
    row = await db_call(store.get_generation(workflow_id))
    if row is None or not row.stage.is_final:
        raise ChatNotRetryableError("Only a chat that has ended can be asked again or edited.")
    original = await _original_request(client, workflow_id)
    turn = NewTurn(prompt=prompt or row.prompt, conversation_id=row.conversation_id)
    if row.conversation_id:
        conversation = await load_conversation(store, row.conversation_id, user_id)
        root = conversation.turn_root(workflow_id)
        turn.prompt = prompt or root.prompt
        turn.parent_id = root.parent_id
        turn.variant_of = root.variant_of or root.workflow_id
        turn.context = conversation.path(root.parent_id)
    else:
        turn.variant_of = row.variant_of or workflow_id
    turn.use_cache = prompt is not None  # regenerate means: not the same answer again
    kind = "edit" if prompt is not None else "regenerate"
    return await _start_derived(
        client, store, settings, user_id, original, turn, kind, workflow_id, idempotency_key
    )


async def continue_chat(
    client: Client,
    store: ChatStore,
    settings: Settings,
    workflow_id: str,
    user_id: str,
    idempotency_key: str | None = None,
) -> str:
    """Carry on an answer cut at the token limit or stopped: a new chat whose context
    ends with that answer, asked to continue it; the two read as one answer."""
    row = await db_call(store.get_generation(workflow_id))
    if row is None:
        raise ChatNotFoundError(workflow_id)
    node = TurnNode(
        workflow_id=row.workflow_id,
        prompt=row.prompt,
        stage=row.stage,
        finish_reason=row.finish_reason,
        parent_id=row.parent_id,
        variant_of=row.variant_of,
        continues=row.continues,
        created_at=row.created_at,
    )
    if not branches.continuable(node):
        raise ChatNotRetryableError(
            "Only an answer that was stopped or cut at the token limit can be continued; "
            f"this one is {row.stage.value}."
        )
    original = await _original_request(client, workflow_id)
    turn = NewTurn(
        prompt=branches.CONTINUE_PROMPT,
        conversation_id=row.conversation_id,
        parent_id=workflow_id,
        continues=workflow_id,
        use_cache=False,
    )
    if row.conversation_id:
        conversation = await load_conversation(store, row.conversation_id, user_id)
        turn.context = conversation.path(workflow_id)
    else:
        turn.context = [node]
    return await _start_derived(
        client, store, settings, user_id, original, turn, "continue", workflow_id, idempotency_key
    )


async def _start_derived(
    client: Client,
    store: ChatStore,
    settings: Settings,
    user_id: str,
    original: ChatRequest,
    turn: NewTurn,
    kind: str,
    source_id: str,
    idempotency_key: str | None,
) -> str:
    """Start a chat made from another one (`kind` of `source_id`), with its model and
    settings. Its id derives from the caller's key: a repeated request (a double click,
    a retried call) starts it once."""
    body = StartChatBody(
        prompt=turn.prompt,
        model=original.model,
        max_tokens=original.max_tokens,
        temperature=original.temperature,
        idempotency_key=idempotency_key,
    )
    key = None if idempotency_key is None else f"{kind}:{source_id}:{idempotency_key}"
    new_id = workflow_id_for(user_id, key)
    return await _start_turn(client, store, settings, body, user_id, new_id, turn)


async def choose_version(
    store: ChatStore, conversation_id: str, user_id: str, workflow_id: str
) -> Conversation:
    """Switch the conversation to the branch through `workflow_id` (a version of a turn),
    down its most recent turns; returns the conversation on that branch."""
    conversation = await load_conversation(store, conversation_id, user_id)
    if workflow_id not in conversation.nodes:
        raise ChatNotFoundError(workflow_id)
    head = conversation.latest_leaf_under(workflow_id)
    await db_call(store.set_conversation_head(conversation_id, user_id, head))
    conversation.head_id = head
    return conversation


async def retry_chat(client: Client, store: ChatStore, settings: Settings, workflow_id: str) -> str:
    """Ask a failed chat again: a new chat with the same request (the same answer cache
    key, so an answer that meanwhile exists is reused). Returns the new chat's id, the
    same one for every retry of this chat: a double click starts one."""
    row = await db_call(store.get_generation(workflow_id))
    if row is None or row.stage not in _RETRYABLE_STAGES:
        stage = "running" if row is None else row.stage.value
        raise ChatNotRetryableError(
            f"Only a failed, terminated or timed-out chat can be retried; this one is {stage}."
        )
    if row.error_type in _FINAL_ERROR_TYPES:
        raise ChatNotRetryableError(
            f"This chat failed because {row.error or 'the request was refused'}; asking again "
            "would fail the same way. Change the prompt or the settings instead."
        )
    request = await _original_request(client, workflow_id)
    request.retry_of = workflow_id
    request.generation_mode = settings.requested_generation_mode
    retry_id = f"chat-{uuid.uuid5(_IDEMPOTENCY_NAMESPACE, f'retry:{workflow_id}')}"
    if request.parent_id is None and row.parent_id is not None:
        request.parent_id = row.parent_id  # a chat recorded before branches existed
    await start_workflow(client, settings, request, retry_id, keyed=True)
    if row.conversation_id:
        # the retry stands for the failed turn: the branch goes on from it
        head = await db_call(store.conversation_head(row.conversation_id, row.user_id))
        if head in (None, workflow_id):
            await db_call(store.set_conversation_head(row.conversation_id, row.user_id, retry_id))
    log.info("failed chat retried", workflow_id=retry_id, retry_of=workflow_id)
    return retry_id


async def _original_request(client: Client, workflow_id: str) -> ChatRequest:
    """The input the chat was started with, from the first event of its history."""
    try:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise ChatNotFoundError(workflow_id) from err
        raise _temporal_error(err) from err
    started = history.events[0].workflow_execution_started_event_attributes
    decoded = await client.data_converter.decode(started.input.payloads, [ChatRequest])
    request = decoded[0]
    assert isinstance(request, ChatRequest)
    return request


async def start_workflow(
    client: Client, settings: Settings, request: ChatRequest, workflow_id: str, keyed: bool
) -> None:
    """Start the chat's workflow; with `keyed`, an existing one of that id is kept."""
    try:
        await client.start_workflow(
            CHAT_WORKFLOW,
            request,
            id=workflow_id,
            task_queue=settings.task_queue,
            id_conflict_policy=(
                WorkflowIDConflictPolicy.USE_EXISTING if keyed else WorkflowIDConflictPolicy.FAIL
            ),
            id_reuse_policy=(
                WorkflowIDReusePolicy.REJECT_DUPLICATE
                if keyed
                else WorkflowIDReusePolicy.ALLOW_DUPLICATE
            ),
            static_summary=summary_for(
                request.prompt,
                request.model,
                with_prompt=settings.payload_encryption_keys is None
                or settings.summary_shows_prompt,
            ),
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(search_attributes.USER, request.user_id),
                    SearchAttributePair(search_attributes.STAGE, Stage.QUEUED.value),
                    *(
                        [
                            SearchAttributePair(
                                search_attributes.CONVERSATION, request.conversation_id
                            )
                        ]
                        if request.conversation_id
                        else []
                    ),
                ]
            ),
            task_timeout=WORKFLOW_TASK_TIMEOUT,
            execution_timeout=(
                timedelta(seconds=settings.chat_timeout_s) if settings.chat_timeout_s else None
            ),
        )
    except WorkflowAlreadyStartedError:
        if not keyed:
            raise
        log.info("idempotent start: chat already exists", workflow_id=workflow_id)
    except RPCError as err:
        raise _temporal_error(err) from err


async def chat_status(
    client: Client, store: ChatStore, settings: Settings, workflow_id: str
) -> ChatStatus:
    """Progress of a chat: from the live workflow when a worker answers the query in
    time, else from PostgreSQL (and Temporal's own record when the row is missing)."""
    handle = client.get_workflow_handle(workflow_id)
    description: WorkflowExecutionDescription | None
    try:
        description = await handle.describe(rpc_timeout=timedelta(seconds=2))
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise ChatNotFoundError(workflow_id) from err
        description = None  # Temporal is down: PostgreSQL alone answers
        log.warning("Temporal unreachable, answering status from PostgreSQL", error=str(err))

    row = await _db_or_none(store.get_generation(workflow_id))
    if description is None and row is None:
        raise DependencyUnavailableError("Temporal and PostgreSQL")

    if description is not None and description.status == WorkflowExecutionStatus.RUNNING:
        progress = await _query_progress(handle, settings.status_query_timeout_s)
        if progress is not None:
            return _status_from_progress(settings, workflow_id, progress, row)
    if description is not None and _record_lags(description, row):
        # Closed in Temporal, still running in the record: an operator's terminate or a
        # timeout. Say how it ended now, and have the record repaired.
        state = await closed_state(client, description)
        await request_reconcile(client, settings, workflow_id)
        return _status_from_close(settings, workflow_id, state, row)
    status_name = (
        _STATUS_NAMES.get(description.status, "unknown")
        if description is not None and description.status is not None
        else None
    )
    if row is None:
        return ChatStatus(
            workflow_id=workflow_id,
            status=status_name or "running",
            stage=Stage.QUEUED.value if status_name == "running" else (status_name or "queued"),
            progress=0.0,
            chunks_saved=0,
            total_chunks=None,
            source="temporal",
            temporal_ui_url=temporal_ui_link(settings, workflow_id),
        )
    return status_from_row(settings, row, status_name)


def _record_lags(description: WorkflowExecutionDescription, row: GenerationRow | None) -> bool:
    """Whether Temporal knows an end of the chat's current run that its record lacks."""
    if description.status in (None, WorkflowExecutionStatus.RUNNING):
        return False
    if row is None or not row.stage.is_final:
        return True
    return row.run_id not in ("", description.run_id)


def _status_from_close(
    settings: Settings, workflow_id: str, state: RunState, row: GenerationRow | None
) -> ChatStatus:
    assert state.stage is not None
    closed: dict[str, Any] = {
        "status": state.stage.value,
        "stage": state.stage.value,
        "error": state.message or None,
        "error_type": state.error_type or None,
        "retryable": state.stage in _RETRYABLE_STAGES,
        "source": "temporal",
    }
    if row is None:
        return ChatStatus(
            workflow_id=workflow_id,
            progress=0.0,
            chunks_saved=0,
            total_chunks=None,
            temporal_ui_url=temporal_ui_link(settings, workflow_id),
            **closed,
        )
    return status_from_row(settings, row, None).model_copy(update=closed)


async def request_reconcile(client: Client, settings: Settings, workflow_id: str) -> None:
    """Start ReconcileChatsWorkflow for this chat (one at a time: `reconcile-<id>`), which
    writes the end Temporal knows into the chat's record and terminal event."""
    try:
        await client.start_workflow(
            RECONCILE_WORKFLOW,
            ReconcileRequest(workflow_ids=[workflow_id]),
            id=f"reconcile-{workflow_id}",
            task_queue=settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            execution_timeout=timedelta(minutes=15),
            static_summary=f"Close the record of {workflow_id}",
        )
    except (RPCError, WorkflowAlreadyStartedError) as err:
        log.warning("cannot start the reconciler", workflow_id=workflow_id, error=str(err))


async def runs_in_temporal(client: Client, workflow_id: str, other_than: str = "") -> bool:
    """Whether the chat's current run is running, and is not the run `other_than`
    (False when Temporal cannot say)."""
    try:
        state = await run_state(client, workflow_id)
    except RPCError:
        return False
    return state.running and not (other_than and state.run_id == other_than)


async def reconcile_if_closed(client: Client, settings: Settings, workflow_id: str) -> None:
    """For a stream that waits in vain: if the chat's run closed, have its record closed."""
    try:
        state = await run_state(client, workflow_id)
    except RPCError as err:
        log.info("cannot ask Temporal whether the chat runs", error=str(err))
        return
    if not state.running:
        await request_reconcile(client, settings, workflow_id)


async def chunk_page(
    client: Client, store: ChatStore, workflow_id: str, from_id: int, limit: int
) -> ChunkPage:
    """Chunks from cursor `from_id`, contiguous, with the cursor to ask for next."""
    row = await db_call(store.get_generation(workflow_id))
    if row is None:
        await _ensure_exists(client, workflow_id)
        return ChunkPage(workflow_id=workflow_id, chunks=[], next_from_id=from_id, status="running")
    chunks = await db_call(store.get_chunks(workflow_id, from_id, limit))
    return ChunkPage(
        workflow_id=workflow_id,
        chunks=[ChunkOut(id=c.id, text=c.text, worker=c.worker, attempt=c.attempt) for c in chunks],
        next_from_id=from_id + len(chunks),
        status=row.status,
    )


async def cancel_chat(client: Client, store: ChatStore, workflow_id: str) -> str:
    """Stop a chat; saved chunks stay. Returns the status to report.

    First a `stopping` event goes into the chat's log: the text viewers had when it was
    written is the text a chat stopped mid-answer keeps (common.preview), and they show
    nothing streamed after it. Then Temporal is asked to cancel the workflow, which ends
    the generation at the provider and saves that text (workflows/chat.py)."""
    handle = client.get_workflow_handle(workflow_id)
    try:
        description = await handle.describe(rpc_timeout=timedelta(seconds=2))
        if description.status != WorkflowExecutionStatus.RUNNING:
            row = await _db_or_none(store.get_generation(workflow_id))
            if row is not None and row.stage.is_final:
                return row.status  # `stopped` is Canceled in Temporal
            return (
                _STATUS_NAMES.get(description.status, "unknown")
                if description.status
                else "unknown"
            )
        try:
            await store.append_event(workflow_id, STOPPING_EVENT, {"by": "user"})
        except LookupError:
            pass  # no record yet (nothing shown), or the chat has just ended
        except _DB_ERRORS as err:  # the stop goes on: the whole preview is kept instead
            log.warning("stop not marked in the chat's log", error=str(err))
        await handle.cancel()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise ChatNotFoundError(workflow_id) from err
        raise _temporal_error(err) from err
    log.info("chat cancellation requested", workflow_id=workflow_id)
    return "cancelling"


# --- helpers --------------------------------------------------------------------------


async def _query_progress(handle: WorkflowHandle[Any, Any], timeout_s: float) -> Progress | None:
    """The workflow's own progress, or None when no worker answers within `timeout_s`."""
    try:
        progress: Progress = await asyncio.wait_for(
            handle.query(
                PROGRESS_QUERY, result_type=Progress, rpc_timeout=timedelta(seconds=timeout_s)
            ),
            timeout=timeout_s + 0.5,
        )
        return progress
    except (RPCError, TimeoutError) as err:
        log.info("progress query unanswered, falling back to PostgreSQL", error=str(err))
        return None


def _status_from_progress(
    settings: Settings, workflow_id: str, progress: Progress, row: GenerationRow | None
) -> ChatStatus:
    """The live workflow's progress, with what only PostgreSQL knows (usage, cost, cache)."""
    live: dict[str, Any] = {
        "status": "running",  # Temporal's execution status is authoritative; stage may run ahead
        "stage": progress.stage.value,
        "progress": progress.percent,
        "chunks_saved": progress.chunks_saved,
        "total_chunks": progress.total_chunks or None,
        "error": progress.error,
        "source": "workflow",
    }
    if row is None:
        return ChatStatus(
            workflow_id=workflow_id, temporal_ui_url=temporal_ui_link(settings, workflow_id), **live
        )
    return status_from_row(settings, row, "running").model_copy(update=live)


def status_from_row(
    settings: Settings, row: GenerationRow, temporal_status: str | None
) -> ChatStatus:
    total = row.total_chunks
    if row.stage is Stage.COMPLETED:
        percent = 100.0
    elif total:
        percent = round(100.0 * row.chunks_saved / total, 1)
    else:
        percent = 0.0
    duration_ms = (
        int((row.completed_at - row.created_at).total_seconds() * 1000)
        if row.completed_at
        else None
    )
    usage = (
        UsageOut(prompt_tokens=row.prompt_tokens, completion_tokens=row.completion_tokens)
        if row.completion_tokens is not None
        else None
    )
    billed = (
        UsageOut(
            prompt_tokens=row.billed_prompt_tokens,
            completion_tokens=row.billed_completion_tokens,
            estimated=row.billed_estimated,
        )
        if row.llm_calls
        else None
    )
    priced = row.unpriced_calls == 0
    cost_usd = row.billed_cost_usd if priced else None
    if cost_usd is None and priced and not row.llm_calls and row.stage.is_final:
        cost_usd = 0.0  # no LLM call was made (a cache hit, an invalid prompt)
    status = row.status
    if temporal_status in ("terminated", "timed_out") and not row.stage.is_final:
        status = temporal_status
    return ChatStatus(
        workflow_id=row.workflow_id,
        status=status,
        stage=row.stage.value,
        progress=percent,
        chunks_saved=row.chunks_saved,
        total_chunks=total,
        error=row.error,
        source="postgres",
        model=row.model,
        provider=row.provider,
        usage=usage,
        created_at=row.created_at,
        completed_at=row.completed_at,
        duration_ms=duration_ms,
        cache_hit=row.cache_hit,
        cached_from=row.cached_from,
        generation_mode=row.generation_mode,
        finish_reason=row.finish_reason,
        notice=_notice(row),
        error_type=row.error_type,
        retryable=row.stage in _RETRYABLE_STAGES and row.error_type not in _FINAL_ERROR_TYPES,
        retry_of=row.retry_of,
        llm_calls=row.llm_calls,
        billed_usage=billed,
        priced=priced,
        cost_usd=cost_usd,
        saved_usd=row.saved_usd,
        saved_ms=row.saved_ms,
        temporal_ui_url=temporal_ui_link(settings, row.workflow_id),
    )


def _notice(row: GenerationRow) -> str | None:
    """What a person should know about how the answer ended."""
    if row.stage is Stage.STOPPED:
        return "Stopped: the answer is kept as it was when it was stopped."
    if row.finish_reason == FinishReason.LENGTH:
        tokens = f"{row.completion_tokens} tokens" if row.completion_tokens else "the token limit"
        return f"Cut at {tokens}: the answer reached max_tokens before it ended."
    if row.finish_reason == FinishReason.CONTENT_FILTER:
        return (
            "The provider's content filter stopped this answer; what it produced before is shown."
        )
    return None


async def without_foreign_source(store: ChatStore, status: ChatStatus, user_id: str) -> ChatStatus:
    """`status` without `cached_from` when the chat it names is another user's: a cache
    hit tells its user that the answer was reused, never whose chat it came from."""
    if status.cached_from is None:
        return status
    source = await _db_or_none(store.get_generation(status.cached_from))
    if source is not None and source.user_id == user_id:
        return status
    return status.model_copy(update={"cached_from": None})


async def ensure_owner(client: Client, store: ChatStore, workflow_id: str, user_id: str) -> None:
    """Raise ChatNotFoundError unless the chat exists and belongs to `user_id`.

    Another user's chat is answered exactly like an unknown one (404), so ids cannot be
    probed. The owner is the generation row's user, or, before a worker wrote the row,
    the `ChatUserId` search attribute the gateway set at start.
    """
    row = await db_call(store.get_generation(workflow_id))
    if row is not None:
        if row.user_id != user_id:
            raise ChatNotFoundError(workflow_id)
        return
    try:
        await _ensure_owner_in_temporal(client, workflow_id, user_id)
    except RPCError as err:
        raise _temporal_error(err) from err


async def ensure_owner_or_unavailable(
    client: Client, store: ChatStore, workflow_id: str, user_id: str
) -> None:
    """ensure_owner for the status route, which must answer while PostgreSQL is down:
    then the owner is read from Temporal's search attribute alone."""
    try:
        await ensure_owner(client, store, workflow_id, user_id)
    except DependencyUnavailableError as err:
        if err.dependency != "PostgreSQL":
            raise
        try:
            await _ensure_owner_in_temporal(client, workflow_id, user_id)
        except RPCError as rpc:
            raise err from rpc


async def _ensure_owner_in_temporal(client: Client, workflow_id: str, user_id: str) -> None:
    """ChatNotFoundError unless Temporal knows the chat and its `ChatUserId` search
    attribute is `user_id`; any other RPC error is raised as it is."""
    try:
        description = await client.get_workflow_handle(workflow_id).describe(
            rpc_timeout=timedelta(seconds=2)
        )
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise ChatNotFoundError(workflow_id) from err
        raise
    if description.typed_search_attributes.get(search_attributes.USER) != user_id:
        raise ChatNotFoundError(workflow_id)


def running_chats_query(user_id: str) -> str:
    """Visibility query of the user's chats that Temporal runs now. User ids never hold
    a double quote or a backslash (api.auth refuses them: Temporal's query language has
    no escape for them), so the id goes between double quotes as it is."""
    return (
        f'WorkflowType = "ChatStreamingWorkflow" AND {search_attributes.USER.name} = "{user_id}"'
        ' AND ExecutionStatus = "Running"'
    )


async def running_chats(client: Client, user_id: str) -> int:
    """The user's running chats, counted by Temporal's visibility (see docs/operations.md
    for what a visibility lag means); not from records, which only a live run closes."""
    try:
        counted = await client.count_workflows(
            running_chats_query(user_id), rpc_timeout=timedelta(seconds=5)
        )
    except RPCError as err:
        raise _temporal_error(err) from err
    return counted.count


async def check_limits(
    client: Client, limits: LimitsStore, settings: Settings, user_id: str
) -> None:
    """429 when the user has too many chats running or started too many this minute."""
    running = await running_chats(client, user_id)
    if running >= settings.max_concurrent_chats:
        raise RateLimitedError(
            f"{running} of your chats are still running (limit {settings.max_concurrent_chats});"
            " wait for one to finish.",
            retry_after_s=2,
        )
    started, seconds_left = await db_call(limits.count_start(user_id))
    if started > settings.rate_limit_per_minute:
        raise RateLimitedError(
            f"Too many chats started this minute (limit {settings.rate_limit_per_minute}).",
            retry_after_s=seconds_left,
        )


async def _ensure_exists(client: Client, workflow_id: str) -> None:
    try:
        await client.get_workflow_handle(workflow_id).describe(rpc_timeout=timedelta(seconds=2))
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise ChatNotFoundError(workflow_id) from err
        raise _temporal_error(err) from err


def _temporal_error(err: RPCError) -> Exception:
    # The SDK reports its own rpc_timeout expiring as CANCELLED ("Timeout expired").
    if err.status in (
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.CANCELLED,
    ):
        return DependencyUnavailableError("Temporal", err.message)
    return err


async def db_call(awaitable: Awaitable[T]) -> T:
    """Await a storage call; a database that cannot answer becomes a 503."""
    try:
        return await awaitable
    except _DB_ERRORS as err:
        raise DependencyUnavailableError("PostgreSQL", str(err) or type(err).__name__) from err


async def _db_or_none(awaitable: Awaitable[T]) -> T | None:
    """Await a storage call; None when the database cannot answer."""
    try:
        return await awaitable
    except _DB_ERRORS as err:
        log.warning("PostgreSQL unreachable", error=str(err) or type(err).__name__)
        return None
