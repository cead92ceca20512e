"""Chainlit handlers of durable-chat's UI: login, persistence, chat, resume, stop, retry.

The work of a turn is in ``ui.turns``; this module only wires it to Chainlit's events.
Run with ``python -m ui`` (see ``ui/__main__.py`` for the environment it needs).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Chainlit loads this file by path; make ``import ui`` work without an installed package.
_REPO_ROOT = str(Path(__file__).resolve().parent.parent)
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

import asyncio  # noqa: E402
import hmac  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
from collections.abc import Coroutine, Sequence  # noqa: E402
from typing import Any  # noqa: E402

import chainlit as cl  # noqa: E402
from chainlit.chat_context import chat_context  # noqa: E402
from chainlit.data import get_data_layer  # noqa: E402
from chainlit.data.chainlit_data_layer import ChainlitDataLayer  # noqa: E402
from chainlit.types import ThreadDict  # noqa: E402

from ui.assertions import HEADER, user_assertion  # noqa: E402
from ui.gateway_client import GatewayClient, GatewayError  # noqa: E402
from ui.rendering import TemporalLinks  # noqa: E402
from ui.settings import get_settings  # noqa: E402
from ui.turn_record import (  # noqa: E402
    TurnRecord,
    UnfinishedTurn,
    retryable_turns,
    unfinished_turns,
)
from ui.turns import (  # noqa: E402
    CONTINUE_ACTION,
    PROMPT_METADATA_KEY,
    REGENERATE_ACTION,
    RETRY_ACTION,
    VERSION_ACTION,
    TurnRunner,
    message_from_step,
    retry_action,
    withdraw,
)
from ui.users import check_login, load_users  # noqa: E402

# Chainlit sends a resumed thread's saved messages right after ``on_chat_resume``
# returns; followers of unfinished turns wait this long so their updates come after.
RESUME_DELAY_S = 0.3

log = logging.getLogger("ui.app")
logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise

settings = get_settings()
links = TemporalLinks(settings.temporal_ui_url, settings.temporal_namespace)

_gateway: GatewayClient | None = None
_runners_by_session: dict[str, set[TurnRunner]] = {}
_background: set[asyncio.Task[Any]] = set()
_retrying: set[str] = set()  # replies whose Retry is being handled in this process


def gateway() -> GatewayClient:
    """The process's gateway client, created on first use inside Chainlit's event loop."""
    global _gateway
    if _gateway is None:
        api_key = settings.gateway_api_key
        _gateway = GatewayClient(
            settings.gateway_url,
            timeout_s=settings.ui_gateway_timeout_s,
            api_key=api_key.get_secret_value() if api_key else None,
        )
    return _gateway


def _runner_for(reply: cl.Message, record: TurnRecord) -> TurnRunner:
    """The runner of a reply already shown and persisted (resumed or retried)."""
    return TurnRunner(
        reply=reply,
        record=record,
        gateway=user_gateway(),
        links=links,
        update_interval_s=settings.ui_update_interval_s,
        reconnect_give_up_s=settings.ui_reconnect_give_up_s,
    )


def _in_background(work: Coroutine[Any, Any, None]) -> None:
    task = asyncio.create_task(work)
    _background.add(task)  # the event loop keeps only weak references to tasks
    task.add_done_callback(_background.discard)


async def _as_session_task(work: Coroutine[Any, Any, Any]) -> None:
    """Run ``work`` as the session's task: the page shows it running and the stop
    button stops its turns (``on_stop``)."""
    cl.context.session.current_task = asyncio.current_task()
    await cl.context.emitter.task_start()  # type: ignore[no-untyped-call]
    try:
        await work
    finally:
        await cl.context.emitter.task_end()  # type: ignore[no-untyped-call]


@cl.data_layer
def data_layer() -> ChainlitDataLayer:
    """Chainlit's asyncpg data layer, on the tables of migration 0002."""
    return ChainlitDataLayer(database_url=settings.asyncpg_dsn)


@cl.password_auth_callback
async def password_login(username: str, password: str) -> cl.User | None:
    """A user of ``UI_USERS_FILE`` (scrypt hashes, read at each login so an added user
    can log in at once), or the one of ``UI_USERNAME`` / ``UI_PASSWORD``."""
    users = await asyncio.to_thread(load_users, settings.ui_users_file)
    if username in users:
        ok = await asyncio.to_thread(check_login, users, username, password)
        return cl.User(identifier=username, metadata={"provider": "credentials"}) if ok else None
    expected = settings.ui_password
    if expected is None:
        await asyncio.to_thread(check_login, {}, username, password)  # same time either way
        return None
    user_ok = hmac.compare_digest(username.encode(), settings.ui_username.encode())
    password_ok = hmac.compare_digest(password.encode(), expected.get_secret_value().encode())
    if user_ok and password_ok:
        return cl.User(identifier=username, metadata={"provider": "credentials"})
    return None


if settings.ui_trusted_user_header:
    _TRUSTED_HEADER = settings.ui_trusted_user_header.lower()

    @cl.header_auth_callback
    async def header_login(headers: Any) -> cl.User | None:
        """Behind an authenticating proxy: the user it names in UI_TRUSTED_USER_HEADER.
        Only safe when nothing but that proxy can reach the UI (docs/security.md)."""
        name = headers.get(_TRUSTED_HEADER)
        return cl.User(identifier=name, metadata={"provider": "header"}) if name else None


if any(key.startswith("OAUTH_") and key.endswith("_CLIENT_ID") for key in os.environ):

    @cl.oauth_callback
    async def oauth_login(
        provider_id: str,
        token: str,
        raw_user_data: dict[str, str],
        default_user: cl.User,
        id_token: str | None = None,
    ) -> cl.User | None:
        """An OAuth/OIDC login (Chainlit's providers, configured by OAUTH_* variables):
        the user is `<provider>:<the provider's identifier>`, so two providers' users of
        the same name stay two people."""
        return cl.User(
            identifier=f"{provider_id}:{default_user.identifier}",
            metadata={"provider": provider_id},
        )


def _assertion_headers(user: str) -> dict[str, str]:
    secret = settings.user_assertion_secret
    if secret is None:
        return {}
    return {HEADER: user_assertion(user, secret.get_secret_value().encode())}


def user_gateway() -> GatewayClient:
    """The gateway client acting for the person logged in to this session (with
    USER_ASSERTION_SECRET; else the UI's own user, as before)."""
    user = cl.context.session.user
    if user is None or settings.user_assertion_secret is None:
        return gateway()
    identifier = user.identifier
    return gateway().acting_for(lambda: _assertion_headers(identifier))


async def _run_turn(runner: TurnRunner, work: Coroutine[Any, Any, None]) -> None:
    """Run a turn in its own task and wait for it.

    Stop cancels the waiting, never the turn: the turn asks the gateway to cancel the
    workflow (``on_stop``) and shows how the workflow ended.
    """
    session_id = cl.context.session.id
    _runners_by_session.setdefault(session_id, set()).add(runner)
    task = asyncio.create_task(work)
    _background.add(task)  # the event loop keeps only weak references to tasks

    def forget(_: asyncio.Task[None]) -> None:
        _background.discard(task)
        current = _runners_by_session.get(session_id, set())
        current.discard(runner)
        if not current:
            _runners_by_session.pop(session_id, None)

    task.add_done_callback(forget)
    await asyncio.shield(task)


@cl.on_message
async def on_message(message: cl.Message) -> None:
    """A new turn: one new ``ChatStreamingWorkflow``, keyed by this message's id.

    An edited message comes here too (Chainlit removed the turns after it from the
    page): it becomes a new version of its turn, the first turn of a new branch; the
    old branch stays in the gateway, and its version buttons show it again."""
    await withdraw(keep_versions=True)  # Regenerate and Continue: the last answer only
    edited = (message.metadata or {}).get(PROMPT_METADATA_KEY)
    runner = await TurnRunner.create(
        prompt_message_id=message.id,
        gateway=user_gateway(),
        links=links,
        update_interval_s=settings.ui_update_interval_s,
        reconnect_give_up_s=settings.ui_reconnect_give_up_s,
        edit_of=edited if isinstance(edited, str) else None,
    )
    runner.prompt_message = message
    await _run_turn(
        runner, runner.run(message.content, conversation_id=cl.context.session.thread_id)
    )


async def _follow_unfinished(turns: Sequence[UnfinishedTurn], thread_id: str) -> None:
    await asyncio.sleep(RESUME_DELAY_S)
    runners = [_runner_for(message_from_step(turn.reply), turn.record) for turn in turns]

    async def follow_all() -> None:
        await asyncio.gather(
            *(
                _run_turn(runner, runner.run(turn.prompt, conversation_id=thread_id))
                for runner, turn in zip(runners, turns, strict=True)
            )
        )

    await _as_session_task(follow_all())


@cl.on_chat_resume
async def on_chat_resume(thread: ThreadDict) -> None:
    """A reopened thread (sidebar, F5, or a reconnect to a restarted server).

    Every reply whose turn had not ended is followed again from the first event of its
    stream (``Last-Event-ID`` 0: the gateway replays the whole log), and its content is
    rebuilt from those events, so nothing shows twice. A failed answer that can be asked
    again gets its Retry button back (Chainlit does not persist buttons).
    """
    steps = thread.get("steps") or []
    for turn in retryable_turns(steps):
        await retry_action(turn.workflow_id).send(for_id=turn.reply_id)
    turns = unfinished_turns(steps)
    if turns:
        _in_background(_follow_unfinished(turns, thread["id"]))
    else:
        _in_background(_offer_last_answer_actions(steps))


async def _offer_last_answer_actions(steps: Sequence[Any]) -> None:
    """The buttons of the thread's last answer (Chainlit does not keep them)."""
    await asyncio.sleep(RESUME_DELAY_S)
    for step in reversed(steps):
        record = TurnRecord.from_metadata(step.get("metadata"))
        if record is None:
            continue
        if record.state == "done" and record.workflow_id and not record.retryable:
            runner = _runner_for(message_from_step(step), record)
            try:
                status = await runner.gateway.get_status(record.workflow_id)
            except GatewayError:
                return
            await runner.offer_actions(status)
        return


async def _reply_runner(action: cl.Action) -> TurnRunner | None:
    """The runner of the reply an action was clicked under, its buttons withdrawn."""
    reply_id = action.forId
    if not reply_id:
        return None
    step = await _persisted_reply(cl.context.session.thread_id, reply_id)
    record = TurnRecord.from_metadata(step.get("metadata")) if step else None
    if step is None or record is None or record.workflow_id is None:
        return None
    await withdraw(reply_id)
    if record.conversation_id is None:
        record.conversation_id = cl.context.session.thread_id
    return _runner_for(message_from_step(step), record)


@cl.action_callback(REGENERATE_ACTION)
async def on_regenerate(action: cl.Action) -> None:
    """Regenerate: a new version of the last answer, shown in the same reply."""
    runner = await _reply_runner(action)
    if runner is not None:
        _in_background(_as_session_task(_run_turn(runner, runner.regenerate(action.id))))


@cl.action_callback(CONTINUE_ACTION)
async def on_continue(action: cl.Action) -> None:
    """Continue: the answer is carried on by a new chat, joined to it in this reply."""
    runner = await _reply_runner(action)
    if runner is not None:
        _in_background(_as_session_task(_run_turn(runner, runner.continue_answer(action.id))))


@cl.action_callback(VERSION_ACTION)
async def on_version(action: cl.Action) -> None:
    """Show another version of a turn: the reply shows it, its user message the prompt
    it answered, and the turns that followed that version replace those after it."""
    target = action.payload.get("workflow_id")
    runner = await _reply_runner(action)
    if runner is None or not isinstance(target, str):
        return
    _in_background(_as_session_task(_show_version(runner, target)))


async def _show_version(runner: TurnRunner, target: str) -> None:
    conversation_id = cl.context.session.thread_id
    try:
        view = await runner.gateway.choose_version(conversation_id, target)
    except GatewayError as exc:
        await cl.Message(content=f"**Could not show that version**: {exc.message}").send()  # type: ignore[no-untyped-call]
        return
    found = view.turn_of(target)
    if found is None:
        return
    index, turn = found
    later_messages = _messages_after(runner.reply.id)
    prompt = _context_message(runner.record.prompt_message_id)
    if prompt is not None and prompt.content != turn.prompt:
        prompt.content = turn.prompt
        prompt.metadata = {**(prompt.metadata or {}), PROMPT_METADATA_KEY: turn.workflow_id}
        await prompt.update()  # type: ignore[no-untyped-call]
    for message in later_messages:
        await message.remove()  # type: ignore[no-untyped-call]
    await _run_turn(runner, runner.show_chats(turn.chats))
    for later in view.turns[index + 1 :]:
        await withdraw(keep_versions=True)
        user = cl.Message(
            content=later.prompt,
            type="user_message",
            author=cl.context.session.user.identifier if cl.context.session.user else "User",
            metadata={PROMPT_METADATA_KEY: later.workflow_id},
        )
        await user.send()  # type: ignore[no-untyped-call]
        # the full record from the start: a reload now follows this chat, never starts one
        record = TurnRecord(
            prompt_message_id=user.id,
            workflow_id=later.chats[-1],
            state="running",
            parts=list(later.chats[:-1]),
            conversation_id=conversation_id,
        )
        reply = cl.Message(content="…", metadata=record.to_metadata())
        await reply.send()  # type: ignore[no-untyped-call]
        follower = _runner_for(reply, record)
        await _run_turn(follower, follower.show_chats(later.chats))


def _context_message(message_id: str) -> cl.Message | None:
    for message in chat_context.get():
        if message.id == message_id:
            return message
    return None


def _messages_after(message_id: str) -> list[cl.Message]:
    """The messages shown after this one in the session (the turns that followed)."""
    messages = chat_context.get()
    ids = [m.id for m in messages]
    return messages[ids.index(message_id) + 1 :] if message_id in ids else []


@cl.action_callback(RETRY_ACTION)
async def on_retry(action: cl.Action) -> None:
    """The Retry button of a failed answer: the same reply asks again and follows the new
    workflow (``TurnRunner.retry``), as the session's task.

    The button goes at once; a second click (or one from another tab) on the same reply
    while its retry runs is ignored here, and would get the same new workflow from the
    gateway anyway.
    """
    reply_id = action.forId
    failed_id = action.payload.get("workflow_id")
    if not reply_id or not isinstance(failed_id, str):
        return
    if reply_id in _retrying:
        log.info("retry already under way for reply %s; click ignored", reply_id)
        return
    _retrying.add(reply_id)
    await action.remove()  # type: ignore[no-untyped-call]
    _in_background(_retry(reply_id, failed_id))


async def _persisted_reply(thread_id: str, reply_id: str) -> dict[str, Any] | None:
    """The reply's step as the data layer keeps it (content and turn record), if any."""
    layer = get_data_layer()  # type: ignore[no-untyped-call]
    thread = await layer.get_thread(thread_id) if layer is not None else None
    for step in (thread or {}).get("steps") or []:
        if str(step.get("id")) == reply_id:
            return dict(step)
    return None


async def _retry(reply_id: str, failed_id: str) -> None:
    try:
        step = await _persisted_reply(cl.context.session.thread_id, reply_id)
        record = TurnRecord.from_metadata(step.get("metadata")) if step else None
        if step is not None and record is not None:
            runner = _runner_for(message_from_step(step), record)
            await _as_session_task(_run_turn(runner, runner.retry(failed_id)))
    finally:
        _retrying.discard(reply_id)


# Chainlit's stop handler sends this message before it calls ``on_stop`` (chainlit
# 2.12, socket.py ``stop``; no setting turns it off). The reply says how its answer
# ended, so this second message is taken back.
CHAINLIT_STOP_MESSAGE = "Task manually stopped."


@cl.on_stop
async def on_stop() -> None:
    """The stop button: stop this session's running workflows through the gateway (an
    answer being written keeps its text); one message says so, the reply's."""
    for message in reversed(chat_context.get()):
        if message.type == "assistant_message" and message.content == CHAINLIT_STOP_MESSAGE:
            await message.remove()  # type: ignore[no-untyped-call]
            break
    for runner in list(_runners_by_session.get(cl.context.session.id, ())):
        await runner.request_stop()


@cl.on_app_shutdown
async def on_app_shutdown() -> None:
    if _gateway is not None:
        await _gateway.aclose()
