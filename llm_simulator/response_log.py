"""A Responses API response: its generation, its status and its event log.

Each response keeps the server-sent events it emitted, appended as its generation changes
(synchronously, from the generation's listener), so the event with a given ``sequence_number``
(its index in the log) is the same for every reader, whenever it attaches. The documented order
(https://platform.openai.com/docs/api-reference/responses-streaming) is::

    response.created            status queued (background) or in_progress
    response.queued             background only
    response.in_progress        background: when the generation starts (after the queue)
    response.output_item.added  the assistant message, status in_progress
    response.content_part.added an empty output_text part
    response.output_text.delta  one per token
    ...then one of these ends:
    completed   output_text.done, content_part.done, output_item.done (completed),
                response.completed                      (the reply ended naturally)
    incomplete  output_text.done, content_part.done, output_item.done (incomplete),
                response.incomplete  incomplete_details.reason = max_output_tokens (cut at the
                limit) or content_filter (content_filter fault)
    failed      response.failed  status failed, error {code, message}  (response_failed fault)
    cancelled   response.failed  status cancelled  (the API has no cancellation event; the
                stream of a cancelled response ends with its final object in a failed event)

An ``error_event`` fault adds one ``error`` event (``code``, ``message``, ``param``,
``sequence_number``) after its ``after_tokens``-th delta; it is part of the history like any
other event. A response cancelled while queued goes straight from ``response.queued`` to its
terminal event.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import Any, Literal

from llm_simulator.engine import Generation, GenerationStatus
from llm_simulator.faults import error_message

ResponseStatus = Literal["queued", "in_progress", "completed", "cancelled", "failed", "incomplete"]
ItemStatus = Literal["in_progress", "completed", "incomplete"]

#: Types of the events that end a response's stream.
TERMINAL_EVENT_TYPES = frozenset({"response.completed", "response.incomplete", "response.failed"})


def encode_event(event: dict[str, Any]) -> bytes:
    """One server-sent event: ``event: <type>`` and ``data: <json>``."""
    data = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    return f"event: {event['type']}\ndata: {data}\n\n".encode()


class ResponseRecord:
    """One response: its generation, the request parameters it echoes, and its event log.

    Contract: :attr:`events` only grows; once :attr:`terminal` is true its last event is the
    terminal one and it never changes again. :meth:`current_object` is the response as it is
    now, equal to the ``response`` of the latest lifecycle event once terminal.
    """

    def __init__(
        self,
        *,
        generation: Generation,
        model: str,
        instructions: str | None,
        max_output_tokens: int | None,
        temperature: float,
        background: bool,
        store: bool,
        error_event_after: int | None = None,
        error_code: str = "server_error",
    ) -> None:
        suffix = generation.id.removeprefix("gen_")
        self.id = f"resp_{suffix}"
        self.message_id = f"msg_{suffix}"
        self.generation = generation
        self.model = model
        self.instructions = instructions
        self.max_output_tokens = max_output_tokens  # as requested (None: the default was used)
        self.temperature = temperature
        self.background = background
        self.store = store
        self.input_tokens = generation.request.input_tokens
        self.events: list[dict[str, Any]] = []
        self.terminal = False
        self._error_event_after = error_event_after
        self._error_code = error_code
        self._error_sent = False
        self._opened = False  # output_item.added and content_part.added are in the log
        self._deltas = 0
        self._changed = asyncio.Event()
        self._append("response.created", response=self._object(self._initial_status, [], None))
        if background:
            self._append("response.queued", response=self._object("queued", [], None))
        else:
            self._open()
        generation.add_listener(self._sync)
        self._sync()

    # -- status --------------------------------------------------------------------------------

    @property
    def _initial_status(self) -> ResponseStatus:
        return "queued" if self.background else "in_progress"

    @property
    def status(self) -> ResponseStatus:
        """The response status implied by the generation's state."""
        generation = self.generation
        match generation.status:
            case GenerationStatus.WAITING:
                return self._initial_status
            case GenerationStatus.RUNNING:
                return "in_progress"
            case GenerationStatus.FINISHED:
                return "completed" if generation.reply.finish_reason == "stop" else "incomplete"
            case GenerationStatus.FILTERED:
                return "incomplete"
            case GenerationStatus.FAILED:
                return "failed"
        return "cancelled"

    def _incomplete_details(self) -> dict[str, str] | None:
        if self.generation.status is GenerationStatus.FILTERED:
            return {"reason": "content_filter"}
        if self.status == "incomplete":
            return {"reason": "max_output_tokens"}
        return None

    def _error(self) -> dict[str, str] | None:
        if self.generation.status is not GenerationStatus.FAILED:
            return None
        code = self.generation.plan.error_code or "server_error"
        return {"code": code, "message": error_message(code)}

    # -- wire format ---------------------------------------------------------------------------

    def _usage(self) -> dict[str, Any]:
        output_tokens = self.generation.produced
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": self.input_tokens + output_tokens,
        }

    @staticmethod
    def _text_part(text: str) -> dict[str, Any]:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def _message_item(self, status: ItemStatus, text: str | None) -> dict[str, Any]:
        return {
            "id": self.message_id,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": [] if text is None else [self._text_part(text)],
        }

    def _object(
        self, status: ResponseStatus, output: list[dict[str, Any]], usage: dict[str, Any] | None
    ) -> dict[str, Any]:
        generation = self.generation
        completed_at = generation.ended_at if status == "completed" else None
        return {
            "id": self.id,
            "object": "response",
            "created_at": generation.created_at,
            "status": status,
            "background": self.background,
            "completed_at": None if completed_at is None else int(completed_at),
            "error": self._error() if status == "failed" else None,
            "incomplete_details": self._incomplete_details() if status == "incomplete" else None,
            "instructions": self.instructions,
            "max_output_tokens": self.max_output_tokens,
            "metadata": {},
            "model": self.model,
            "output": output,
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            "temperature": self.temperature,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": usage,
            "user": None,
        }

    def initial_object(self) -> dict[str, Any]:
        """The response as created: no output yet, ``queued`` in background mode."""
        return dict(self.events[0]["response"])

    def current_object(self) -> dict[str, Any]:
        """The response now: status, the output produced so far, usage once it is terminal."""
        status = self.status
        item_status: ItemStatus = (
            "completed"
            if status == "completed"
            else "in_progress"
            if status in ("queued", "in_progress")
            else "incomplete"
        )
        output = [self._message_item(item_status, self.generation.text)] if self._opened else []
        usage = self._usage() if self.generation.done else None
        return self._object(status, output, usage)

    # -- event log -----------------------------------------------------------------------------

    def _append(self, event_type: str, **fields: Any) -> None:
        self.events.append({"type": event_type, **fields, "sequence_number": len(self.events)})

    def _part_fields(self) -> dict[str, Any]:
        return {"item_id": self.message_id, "output_index": 0, "content_index": 0}

    def _open(self) -> None:
        """The events that open the output: in_progress, the message item, its text part."""
        self._opened = True
        self._append("response.in_progress", response=self._object("in_progress", [], None))
        self._append(
            "response.output_item.added",
            output_index=0,
            item=self._message_item("in_progress", None),
        )
        self._append("response.content_part.added", **self._part_fields(), part=self._text_part(""))
        self._maybe_error_event()

    def _maybe_error_event(self, *, before_tail: bool = False) -> None:
        after = self._error_event_after
        if after is None or self._error_sent or not (before_tail or self._deltas >= after):
            return
        self._error_sent = True
        code = self._error_code
        self._append("error", code=code, message=error_message(code), param=None)

    def _close(self) -> None:
        """The events after the last delta, for the generation's terminal state."""
        status = self.status
        final = self.current_object()
        if status in ("completed", "incomplete") and self._opened:
            text = self.generation.text
            item_status: ItemStatus = "completed" if status == "completed" else "incomplete"
            self._append("response.output_text.done", **self._part_fields(), text=text, logprobs=[])
            self._append(
                "response.content_part.done", **self._part_fields(), part=self._text_part(text)
            )
            self._append(
                "response.output_item.done",
                output_index=0,
                item=self._message_item(item_status, text),
            )
        event_type = {"completed": "response.completed", "incomplete": "response.incomplete"}
        self._append(event_type.get(status, "response.failed"), response=final)
        self.terminal = True

    def _sync(self) -> None:
        """Bring the log up to date with the generation (called after each of its changes)."""
        if self.terminal:
            return
        generation = self.generation
        if not self._opened and generation.started:
            self._open()
        if self._opened:
            while self._deltas < generation.produced:
                self._append(
                    "response.output_text.delta",
                    **self._part_fields(),
                    delta=generation.tokens[self._deltas],
                    logprobs=[],
                )
                self._deltas += 1
                self._maybe_error_event()
        if generation.done:
            if self._opened:
                self._maybe_error_event(before_tail=True)
            self._close()
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def follow(self, start: int = 0) -> AsyncGenerator[list[dict[str, Any]], None]:
        """Yield the events from sequence number ``start`` on, in batches, as they are logged;
        end after the terminal event."""
        cursor = max(0, start)
        while True:
            changed = self._changed
            if cursor < len(self.events):
                batch = self.events[cursor:]
                cursor = len(self.events)
                yield batch
                continue
            if self.terminal:
                return
            await changed.wait()
