"""One chat turn in the UI: start (or find again) its workflow, follow it, keep the reply.

The reply message is the only thing a turn writes: one assistant message whose content
is rebuilt from the turn's whole event stream at every update (``LiveAnswer``: the live
text while the LLM writes, then the checkpointed chunks), so nothing ever shows twice,
however many followers a turn had or however often the stream reconnected. Its metadata
remembers the turn (``TurnRecord``) and is persisted by Chainlit's data layer *before*
the reply changes on screen, so a page reload or a restarted Chainlit server finds every
unfinished turn in the thread and follows it again from the stream's first event, by
workflow id, or by idempotency key if the workflow id was not saved yet: the gateway
never starts a second workflow for a turn.

An answer that failed in a way asking again may fix (the provider was down) ends with a
Retry button (``retry_action``). ``TurnRunner.retry`` asks the gateway for the new
workflow (one per failed workflow, however often it is asked), records it in the turn
and follows it in the same reply, like any turn: a reload follows the new workflow.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import chainlit as cl
from chainlit.config import config as chainlit_config
from chainlit.context import context
from chainlit.data import get_data_layer

from ui import rendering
from ui.gateway_client import (
    GatewayClient,
    GatewayError,
    GatewayRejected,
    GatewayUnavailable,
    InvalidPrompt,
    StreamInterrupted,
    WorkflowNotFound,
    WorkflowStatus,
    follow_events,
)
from ui.live_answer import LiveAnswer
from ui.rendering import TemporalLinks
from ui.turn_record import TurnRecord

log = logging.getLogger(__name__)

CHAINLIT_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # what Chainlit's data layer parses
PARENT_GAP = timedelta(milliseconds=2)
START_ATTEMPTS = 5
START_FIRST_BACKOFF_S = 0.5
# After its terminal event, ask for the workflow's status (duration, tokens) this often.
FINAL_STATUS_ATTEMPTS = 10
FINAL_STATUS_PAUSE_S = 0.3
# A stream quiet for this long: check whether Temporal ended the workflow without it.
QUIET_CHECK_S = 20.0
SILENT_ENDS = frozenset({"terminated", "timed_out"})
RETRY_ACTION = "retry_failed_answer"
REGENERATE_ACTION = "regenerate_answer"
CONTINUE_ACTION = "continue_answer"
VERSION_ACTION = "show_version"
# Where a user message remembers the chat it started (an edit of it asks the gateway
# for a new version of that chat's turn).
PROMPT_METADATA_KEY = "durable_chat_prompt"

# The buttons offered under replies, by session and reply: they are sent to the page
# only (Chainlit does not persist actions), and withdrawn when a new turn starts, so
# only the last answer has them.
_offered: dict[str, dict[str, list[cl.Action]]] = {}


async def offer(reply_id: str, actions: list[cl.Action]) -> None:
    """Show `actions` under the reply (in place of those it had)."""
    await withdraw(reply_id)
    for action in actions:
        await action.send(for_id=reply_id)
    _offered.setdefault(context.session.id, {})[reply_id] = actions


async def withdraw(reply_id: str | None = None, *, keep_versions: bool = False) -> None:
    """Take back the buttons of one reply, or (None) of every reply of this session;
    with `keep_versions`, the version switch stays (an earlier turn's versions can be
    chosen again once later turns follow it)."""
    session = _offered.get(context.session.id, {})
    for key in [reply_id] if reply_id is not None else list(session):
        kept: list[cl.Action] = []
        for action in session.pop(key, []):
            if keep_versions and action.name == VERSION_ACTION:
                kept.append(action)
            else:
                await action.remove()  # type: ignore[no-untyped-call]
        if kept:
            session[key] = kept


def turn_actions(
    workflow_id: str, status: WorkflowStatus | None, versions: tuple[str, ...], root: str
) -> list[cl.Action]:
    """Regenerate, Continue (a stopped or cut answer) and the version switch of an
    answer that ended with text."""
    if status is None or status.status not in ("completed", "stopped"):
        return []
    actions = [
        cl.Action(
            name=REGENERATE_ACTION,
            payload={"workflow_id": workflow_id},
            label="Regenerate",
            icon="refresh-cw",
            tooltip="Ask again: a new version of this answer (the current one stays)",
        )
    ]
    if status.status == "stopped" or status.finish_reason == "length":
        actions.append(
            cl.Action(
                name=CONTINUE_ACTION,
                payload={"workflow_id": workflow_id},
                label="Continue",
                icon="arrow-right",
                tooltip="Carry on from where this answer stopped",
            )
        )
    if len(versions) > 1 and root in versions:
        index = versions.index(root)
        shown = f"{index + 1}/{len(versions)}"
        if index > 0:
            actions.append(_version_action(versions[index - 1], f"◀ version {shown}"))
        if index < len(versions) - 1:
            actions.append(_version_action(versions[index + 1], f"version {shown} ▶"))
    return actions


def _version_action(target: str, label: str) -> cl.Action:
    return cl.Action(
        name=VERSION_ACTION,
        payload={"workflow_id": target},
        label=label,
        tooltip="Show another version of this answer, and the turns that followed it",
    )


def retry_action(workflow_id: str) -> cl.Action:
    """The Retry button of a reply whose workflow ``workflow_id`` failed (send it for the reply)."""
    return cl.Action(
        name=RETRY_ACTION,
        payload={"workflow_id": workflow_id},
        label="Retry",
        icon="rotate-ccw",
        tooltip="Ask again: a new answer to the same prompt",
    )


async def _with_backoff(start: Callable[[], Awaitable[str]]) -> str:
    """``start()``, tried again while the gateway is unavailable (``START_ATTEMPTS`` in all).

    Only for idempotent starts: a repeated one returns the workflow the first one started.
    """
    delay = START_FIRST_BACKOFF_S
    for _ in range(START_ATTEMPTS - 1):
        try:
            return await start()
        except GatewayUnavailable:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
    return await start()


def _reply_time(parent_created_at: str | None) -> str:
    """Now, but at least ``PARENT_GAP`` after the reply's parent step was created.

    Chainlit's data layer keeps step times to the millisecond and lists a thread's steps
    by start time; when the page rebuilds a thread (reload, restarted server, sidebar)
    it drops a reply listed before its parent step (the ``on_message`` run, created
    within the same millisecond more often than not).
    """
    now = datetime.now(UTC).replace(tzinfo=None)
    parent = _chainlit_time(parent_created_at)
    if parent is not None:
        now = max(now, datetime.strptime(parent, CHAINLIT_TIME_FORMAT) + PARENT_GAP)
    return now.strftime(CHAINLIT_TIME_FORMAT)


def _chainlit_time(value: str | None) -> str | None:
    """A timestamp from the data layer, in the one format its writes accept."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed.strftime(CHAINLIT_TIME_FORMAT)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def message_from_step(step: Mapping[str, Any]) -> cl.Message:
    """The ``cl.Message`` of an already shown and persisted reply, to keep updating it."""
    message = cl.Message(
        id=str(step["id"]),
        content=str(step.get("output") or ""),
        author=str(step.get("name") or chainlit_config.ui.name),
        metadata=dict(step.get("metadata") or {}),
        created_at=_chainlit_time(step.get("start") or step.get("createdAt")),
    )
    message.persisted = True
    return message


class TurnRunner:
    """Drives one turn until its workflow ends, writing only the reply message."""

    def __init__(
        self,
        *,
        reply: cl.Message,
        record: TurnRecord,
        gateway: GatewayClient,
        links: TemporalLinks,
        update_interval_s: float,
        reconnect_give_up_s: float,
    ) -> None:
        self.reply = reply
        self.record = record
        self.gateway = gateway
        self.links = links
        self.update_interval_s = update_interval_s
        self.reconnect_give_up_s = reconnect_give_up_s
        self.stop_requested = False
        self._answer = LiveAnswer()
        self._problem: str | None = None
        self._following = False
        self._last_event_at = time.monotonic()
        self._changed = asyncio.Event()
        self._publishing = asyncio.Lock()
        self._shown: str | None = None
        self._earlier: list[rendering.EarlierPart] = []
        self.prompt_message: cl.Message | None = None
        """The user's message, told the chat it started (for an edit of it later)."""

    @classmethod
    async def create(
        cls,
        *,
        prompt_message_id: str,
        gateway: GatewayClient,
        links: TemporalLinks,
        update_interval_s: float,
        reconnect_give_up_s: float,
        edit_of: str | None = None,
    ) -> TurnRunner:
        """A new turn: its reply is persisted (with the turn record) and then shown.
        With `edit_of`, the turn is an edit of that chat's user message."""
        record = TurnRecord(prompt_message_id=prompt_message_id, edit_of=edit_of)
        reply = cl.Message(
            content=rendering.render_starting(),
            metadata=record.to_metadata(),
        )
        parent = context.current_step  # set as the reply's parent by cl.Message
        reply.created_at = _reply_time(parent.created_at if parent is not None else None)
        reply.persisted = True  # persisted below, awaited, not in a background task
        runner = cls(
            reply=reply,
            record=record,
            gateway=gateway,
            links=links,
            update_interval_s=update_interval_s,
            reconnect_give_up_s=reconnect_give_up_s,
        )
        await runner._persist()
        await reply.send()  # type: ignore[no-untyped-call]
        runner._shown = reply.content
        return runner

    @property
    def workflow_id(self) -> str | None:
        return self.record.workflow_id

    async def run(self, prompt: str | None, *, conversation_id: str) -> None:
        """Start the workflow if the turn has none yet, then follow it to its end."""

        self.record.conversation_id = conversation_id

        async def start_then_follow() -> None:
            if self.record.workflow_id is None:
                if not await self._start(prompt, conversation_id=conversation_id):
                    return
            await self._follow()

        await self._guarded(start_then_follow())

    async def retry(self, failed_workflow_id: str) -> None:
        """Ask the turn's failed workflow again and follow the new one in this reply.

        The new workflow's id is persisted in the turn record before it is followed, so a
        reload follows it. A click on a Retry button that is stale (the turn moved on)
        changes nothing.
        """
        if not self.record.retryable or self.record.workflow_id != failed_workflow_id:
            log.info("stale retry ignored", extra={"workflow_id": failed_workflow_id})
            return
        await self._guarded(self._retry_then_follow(failed_workflow_id))

    async def _retry_then_follow(self, failed_workflow_id: str) -> None:
        try:
            workflow_id = await _with_backoff(lambda: self.gateway.retry(failed_workflow_id))
        except GatewayError as exc:
            notice = cl.Message(content=rendering.render_retry_refused(exc.message))
            await notice.send()  # type: ignore[no-untyped-call]
            if isinstance(exc, GatewayUnavailable):  # it may work later: keep the button
                await retry_action(failed_workflow_id).send(for_id=self.reply.id)
            else:
                self.record.retryable = False
                await self._publish(self.reply.content, force=True)
            return
        self.record = TurnRecord(
            prompt_message_id=self.record.prompt_message_id,
            workflow_id=workflow_id,
            state="running",
            retry_of=failed_workflow_id,
            conversation_id=self.record.conversation_id,
        )
        await self._publish(self._render_running())
        if self.stop_requested:
            await self.request_stop()
        await self._follow()

    async def regenerate(self, idempotency_key: str) -> None:
        """A new version of this answer (the gateway skips its answer cache), followed
        in this reply; the earlier versions stay and can be shown again."""
        current = self.workflow_id
        assert current is not None
        await self._follow_new_chat(
            lambda: self.gateway.regenerate(current, idempotency_key=idempotency_key),
            parts=[],
            what="Could not regenerate the answer",
        )

    async def continue_answer(self, idempotency_key: str) -> None:
        """Carry the answer on: a new chat whose text this reply shows after it."""
        current = self.workflow_id
        assert current is not None
        await self._follow_new_chat(
            lambda: self.gateway.continue_answer(current, idempotency_key=idempotency_key),
            parts=[*self.record.parts, current],
            what="Could not continue the answer",
        )

    async def _follow_new_chat(
        self, ask: Callable[[], Awaitable[str]], *, parts: list[str], what: str
    ) -> None:
        """Ask the gateway for a chat made from this one, then follow it in this reply
        after `parts`; a refusal is a notice, the reply stays as it was."""

        async def ask_then_follow() -> None:
            try:
                new_id = await _with_backoff(ask)
            except GatewayError as exc:
                notice = cl.Message(content=f"**{what}**: {exc.message}")
                await notice.send()  # type: ignore[no-untyped-call]
                return
            await self._switch_to(new_id, parts)

        await self._guarded(ask_then_follow())

    async def show_chats(self, chats: tuple[str, ...]) -> None:
        """Show another version of the turn (its chats: the first and its continuations)."""
        await self._guarded(self._switch_to(chats[-1], list(chats[:-1])))

    async def _switch_to(self, workflow_id: str, parts: list[str]) -> None:
        self.record = TurnRecord(
            prompt_message_id=self.record.prompt_message_id,
            workflow_id=workflow_id,
            state="running",
            parts=parts,
            conversation_id=self.record.conversation_id,
        )
        self._answer = LiveAnswer()
        await self._load_earlier()
        await self._publish(self._render_running())
        await self._follow()

    async def _load_earlier(self) -> None:
        """The text and badges of the answers this reply continues."""
        earlier: list[rendering.EarlierPart] = []
        for part in self.record.parts:
            try:
                text = await self.gateway.answer_text(part)
                status: WorkflowStatus | None = await self.gateway.get_status(part)
            except GatewayError as exc:
                log.info("earlier part unavailable: %s", exc.message)
                text, status = "", None
            earlier.append(rendering.earlier_part(text, status, links=self.links, workflow_id=part))
        self._earlier = earlier

    async def offer_actions(self, status: WorkflowStatus | None) -> None:
        """The buttons of an answer that ended: see ``turn_actions``."""
        if self.workflow_id is None:
            return
        root = self.record.parts[0] if self.record.parts else self.workflow_id
        versions: tuple[str, ...] = ()
        if self.record.conversation_id and status is not None:
            try:
                view = await self.gateway.conversation(self.record.conversation_id)
            except GatewayError as exc:
                log.info("versions unavailable: %s", exc.message)
            else:
                found = view.turn_of(root)
                versions = found[1].versions if found else ()
        await offer(self.reply.id, turn_actions(self.workflow_id, status, versions, root))

    async def _guarded(self, work: Awaitable[None]) -> None:
        """Run the turn's ``work``; an unexpected error becomes a sentence in the reply."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:  # shown as a sentence, logged with its traceback
            log.exception("turn failed in the UI", extra={"workflow_id": self.workflow_id})
            await self._publish(
                rendering.render_follow_failed(
                    self._answer.text,
                    "the UI hit an unexpected error; reload the page to pick the answer up again.",
                    links=self.links,
                    workflow_id=self.workflow_id or "",
                )
                if self.workflow_id
                else rendering.render_start_failed("the UI hit an unexpected error.")
            )

    async def request_stop(self) -> None:
        """Ask the gateway to cancel the workflow; the follower shows the outcome."""
        self.stop_requested = True
        if self.workflow_id is None:
            return  # ``_start`` cancels as soon as it knows the id
        try:
            await self.gateway.cancel_workflow(self.workflow_id)
        except (WorkflowNotFound, GatewayRejected) as exc:
            log.info("cancel refused: %s", exc.message)  # typically: already ended
        except GatewayUnavailable as exc:
            notice = cl.Message(content=f"**Could not stop the answer**: {exc.message}")
            await notice.send()  # type: ignore[no-untyped-call]
            return
        if self._following:
            self._changed.set()  # shows "stopping…" until the cancelled event arrives

    async def _start(self, prompt: str | None, *, conversation_id: str) -> bool:
        if prompt is None:
            self.record.state = "done"
            await self._publish(
                rendering.render_start_failed("the prompt of this turn was not saved.")
            )
            return False
        edit_of = self.record.edit_of

        async def start() -> str:
            if edit_of is not None:  # the prompt is an edit: a new version of that turn
                key = f"{self.record.prompt_message_id}-{_digest(prompt)}"
                return await self.gateway.edit(edit_of, prompt, idempotency_key=key)
            return await self.gateway.start_workflow(
                prompt,
                conversation_id=conversation_id,
                idempotency_key=self.record.prompt_message_id,
            )

        try:
            workflow_id = await _with_backoff(start)  # the idempotency key makes a repeat safe
        except InvalidPrompt as exc:
            return await self._give_up(rendering.render_rejected(exc.message))
        except GatewayError as exc:
            return await self._give_up(rendering.render_start_failed(exc.message))
        self.record.workflow_id = workflow_id
        self.record.state = "running"
        await self._publish(self._render_running())
        await self._tag_prompt(workflow_id)
        if self.stop_requested:
            await self.request_stop()
        return True

    async def _tag_prompt(self, workflow_id: str) -> None:
        message = self.prompt_message
        if message is None:
            return
        message.metadata = {**(message.metadata or {}), PROMPT_METADATA_KEY: workflow_id}
        try:
            await message.update()  # type: ignore[no-untyped-call]
        except Exception:  # only a later edit of this message needs it
            log.exception("could not tag the prompt", extra={"workflow_id": workflow_id})

    async def _give_up(self, content: str) -> bool:
        self.record.state = "done"
        await self._publish(content)
        return False

    async def _follow(self) -> None:
        """Follow the workflow's event stream from its first event to its terminal one.

        Three tasks: the reader applies events to the answer; the renderer shows the
        answer at most every ``update_interval_s``; the watchdog notices a workflow that
        ended without a terminal event (terminated or timed out in Temporal).
        """
        assert self.workflow_id is not None
        self._answer = LiveAnswer()  # rebuilt from event 1: nothing can show twice
        if self.record.parts and len(self._earlier) != len(self.record.parts):
            await self._load_earlier()  # a reload of a continued answer
        self._following = True
        self._last_event_at = time.monotonic()
        reader = asyncio.create_task(self._read_events())
        watchdog = asyncio.create_task(self._watch_for_silent_end())
        renderer = asyncio.create_task(self._render_while_following())
        try:
            await asyncio.wait({reader, watchdog}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._following = False
            for task in (reader, watchdog, renderer):
                task.cancel()
            await asyncio.gather(reader, watchdog, renderer, return_exceptions=True)

        if reader.done() and not reader.cancelled():
            error = reader.exception()
            if isinstance(error, WorkflowNotFound):
                self.record.state = "done"
                await self._publish(self._render_lost(error.message))
                return
            if isinstance(error, GatewayUnavailable):  # a long outage; a reload retries
                await self._publish(self._render_lost(error.message))
                return
            if error is not None:
                raise error
            status = await self._final_status()
        else:
            status = watchdog.result()
        self.record.state = "done"
        self.record.retryable = (
            status is not None
            and status.status in ("failed", "terminated", "timed_out")
            and status.retryable
        )
        await self._publish(
            rendering.render_ended(
                self._answer,
                status,
                links=self.links,
                workflow_id=self.workflow_id,
                earlier=self._earlier,
            ),
            force=True,
        )
        if self.record.retryable:
            await retry_action(self.workflow_id).send(for_id=self.reply.id)
        else:
            await self.offer_actions(status)

    async def _read_events(self) -> None:
        assert self.workflow_id is not None
        async for item in follow_events(
            self.gateway, self.workflow_id, give_up_after_s=self.reconnect_give_up_s
        ):
            if isinstance(item, StreamInterrupted):
                self._problem = f"{item.message} Reconnecting in {item.retry_in_s:g} s…"
            else:
                self._problem = None
                self._last_event_at = time.monotonic()
                self._answer.apply(item)
            self._changed.set()

    async def _render_while_following(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            await self._publish(self._render_running())
            await asyncio.sleep(self.update_interval_s)

    async def _watch_for_silent_end(self) -> WorkflowStatus:
        """The status of a workflow that ended without a terminal event, once the stream
        has been quiet for a while (only Temporal knows it was terminated or timed out)."""
        assert self.workflow_id is not None
        while True:
            await asyncio.sleep(QUIET_CHECK_S)
            if time.monotonic() - self._last_event_at < QUIET_CHECK_S:
                continue
            try:
                status = await self.gateway.get_status(self.workflow_id)
            except GatewayError:
                continue
            if status.status in SILENT_ENDS:
                return status

    async def _final_status(self) -> WorkflowStatus | None:
        """The ended workflow's status, for the result badges. Temporal can still call the
        workflow running for a moment after its terminal event: ask again briefly."""
        assert self.workflow_id is not None
        status: WorkflowStatus | None = None
        for attempt in range(1, FINAL_STATUS_ATTEMPTS + 1):
            try:
                status = await self.gateway.get_status(self.workflow_id)
            except GatewayError as exc:
                log.info("final status unavailable: %s", exc.message)
            if (status is not None and status.is_terminal) or attempt == FINAL_STATUS_ATTEMPTS:
                return status
            await asyncio.sleep(FINAL_STATUS_PAUSE_S)
        return status

    def _render_running(self) -> str:
        assert self.workflow_id is not None
        return rendering.render_running(
            self._answer,
            links=self.links,
            workflow_id=self.workflow_id,
            problem=self._problem,
            stopping=self.stop_requested,
            earlier=self._earlier,
        )

    def _render_lost(self, message: str) -> str:
        assert self.workflow_id is not None
        return rendering.render_follow_failed(
            self._answer.text, message, links=self.links, workflow_id=self.workflow_id
        )

    async def _persist(self) -> None:
        data_layer = get_data_layer()  # type: ignore[no-untyped-call]
        if data_layer is None:
            return
        try:
            await data_layer.update_step(self.reply.to_dict())
        except Exception:  # the chat goes on; only a reload could lose this update
            log.exception("could not persist the reply", extra={"workflow_id": self.workflow_id})

    async def _publish(self, content: str, *, force: bool = False) -> None:
        """Persist, then show, the reply with this content and the current turn record."""
        async with self._publishing:
            if content == self._shown and not force and self._persisted_state_is_current():
                return
            self.reply.content = content
            self.reply.metadata = {**(self.reply.metadata or {}), **self.record.to_metadata()}
            await self._persist()
            await context.emitter.update_step(self.reply.to_dict())
            self._shown = content

    def _persisted_state_is_current(self) -> bool:
        saved = TurnRecord.from_metadata(self.reply.metadata)
        return saved == self.record
