"""One chat turn in the UI: start (or find again) its workflow, follow it, keep the reply.

The reply message is the only thing a turn writes: one assistant message whose content
is rebuilt from chunk 0 at every update (so nothing ever shows twice, however many
followers a turn had) and whose metadata remembers the turn (``TurnRecord``). That
metadata is persisted by Chainlit's data layer *before* the reply changes on screen, so
a page reload or a restarted Chainlit server finds every unfinished turn in the thread
and follows it again (``unfinished_turns``), by workflow id, or by idempotency key if the
workflow id was not saved yet: the gateway never starts a second workflow for a turn.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
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
    WorkflowNotFound,
    WorkflowStatus,
    follow_workflow,
)
from ui.rendering import TemporalLinks
from ui.turn_record import TurnRecord

log = logging.getLogger(__name__)

CHAINLIT_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # what Chainlit's data layer parses
START_ATTEMPTS = 5


def _now() -> str:
    return datetime.now(UTC).replace(tzinfo=None).strftime(CHAINLIT_TIME_FORMAT)


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
        poll_interval_s: float,
    ) -> None:
        self.reply = reply
        self.record = record
        self.gateway = gateway
        self.links = links
        self.poll_interval_s = poll_interval_s
        self.stop_requested = False
        self._answer = ""
        self._last_status: WorkflowStatus | None = None
        self._shown: str | None = None

    @classmethod
    async def create(
        cls,
        *,
        prompt_message_id: str,
        gateway: GatewayClient,
        links: TemporalLinks,
        poll_interval_s: float,
    ) -> TurnRunner:
        """A new turn: its reply is persisted (with the turn record) and then shown."""
        record = TurnRecord(prompt_message_id=prompt_message_id)
        reply = cl.Message(
            content=rendering.render_starting(),
            metadata=record.to_metadata(),
            created_at=_now(),  # the time Chainlit orders the thread's messages by
        )
        reply.persisted = True  # persisted below, awaited, not in a background task
        runner = cls(
            reply=reply,
            record=record,
            gateway=gateway,
            links=links,
            poll_interval_s=poll_interval_s,
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
        try:
            if self.record.workflow_id is None:
                if not await self._start(prompt, conversation_id=conversation_id):
                    return
            await self._follow()
        except asyncio.CancelledError:
            raise
        except Exception:  # shown as a sentence, logged with its traceback
            log.exception("turn failed in the UI", extra={"workflow_id": self.workflow_id})
            await self._publish(
                rendering.render_follow_failed(
                    self._answer,
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
        if self._last_status is not None and not self._last_status.is_terminal:
            await self._publish(self._render_running(problem=None))

    async def _start(self, prompt: str | None, *, conversation_id: str) -> bool:
        if prompt is None:
            self.record.state = "done"
            await self._publish(
                rendering.render_start_failed("the prompt of this turn was not saved.")
            )
            return False
        delay = self.poll_interval_s
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                workflow_id = await self.gateway.start_workflow(
                    prompt,
                    conversation_id=conversation_id,
                    idempotency_key=self.record.prompt_message_id,
                )
                break
            except GatewayUnavailable as exc:
                # The idempotency key makes a repeated start safe.
                if attempt == START_ATTEMPTS:
                    return await self._give_up(rendering.render_start_failed(exc.message))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except InvalidPrompt as exc:
                return await self._give_up(rendering.render_rejected(exc.message))
            except GatewayError as exc:
                return await self._give_up(rendering.render_start_failed(exc.message))
        self.record.workflow_id = workflow_id
        self.record.state = "running"
        await self._publish(self._render_running(problem=None))
        if self.stop_requested:
            await self.request_stop()
        return True

    async def _give_up(self, content: str) -> bool:
        self.record.state = "done"
        await self._publish(content)
        return False

    async def _follow(self) -> None:
        assert self.workflow_id is not None
        parts: list[str] = []
        try:
            async for update in follow_workflow(
                self.gateway, self.workflow_id, interval_s=self.poll_interval_s
            ):
                parts.extend(chunk.text for chunk in update.new_chunks)
                self._answer = "".join(parts)
                self._last_status = update.status
                if update.status.is_terminal:
                    self.record.state = "done"
                    await self._publish(
                        rendering.render_ended(self._answer, update.status, links=self.links),
                        force=True,
                    )
                    return
                await self._publish(self._render_running(problem=update.problem))
        except WorkflowNotFound as exc:
            self.record.state = "done"
            await self._publish(self._render_lost(exc.message))
        except GatewayUnavailable as exc:  # after a long outage; a reload retries
            await self._publish(self._render_lost(exc.message))

    def _render_running(self, *, problem: str | None) -> str:
        assert self.workflow_id is not None
        return rendering.render_running(
            self._answer,
            self._last_status,
            links=self.links,
            workflow_id=self.workflow_id,
            problem=problem,
            stopping=self.stop_requested,
        )

    def _render_lost(self, message: str) -> str:
        assert self.workflow_id is not None
        return rendering.render_follow_failed(
            self._answer, message, links=self.links, workflow_id=self.workflow_id
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
