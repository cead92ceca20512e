"""A chat's event log, read as the text an OpenAI client may be given, and as the
Responses API's event stream.

The chat log (docs/live-streaming.md) has a preview that may be taken back (`reset`:
the LLM call restarted) and durable chunks. OpenAI's protocols cannot take text
back, so `AnswerText` gives a client only text that will stay:

- live `delta`s of a resumable generation (they carry the provider's `response_id`:
  a retried call re-attaches and continues at the same offset, so the text stays);
- otherwise the durable chunks as they are saved: a provider that can only restart
  (llama.cpp) is followed at checkpoint pace, since its preview may be replaced.

A `reset` after text was given (the provider lost a resumable generation, or an
operator reset the chat) switches to the chunks from then on. The translation is a
pure function of the log, so the same log gives the same events with the same
`sequence_number`s to every reader, on any gateway, before and after a restart:
`starting_after=N` replays the log and skips what was numbered up to N.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from api.v1.objects import message_id_for, message_item, response_object, text_part
from common.contract import TERMINAL_EVENTS
from common.preview import STOPPING_EVENT
from storage import ChatEvent, ResponseRow

log = structlog.get_logger(__name__)

_STARTED_STAGES = {"validating", "generating", "checkpointing"}


@dataclass(frozen=True)
class Opened:
    """The chat started working on the answer."""


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class Ended:
    """The chat's terminal event; `text` is its durable answer (all chunks)."""

    kind: str
    text: str


TextEvent = Opened | TextDelta | Ended


class AnswerText:
    """Turns chat events into text that is never taken back (see the module docstring)."""

    def __init__(self) -> None:
        self.sent = ""
        self.opened = False
        self._live = True
        self._chunks: dict[int, str] = {}
        self._durable = ""
        self._next_chunk = 0

    def feed(self, event: ChatEvent) -> list[TextEvent]:
        out: list[TextEvent] = []
        data = event.data
        if event.type == "stage" and data.get("stage") in _STARTED_STAGES:
            self._open(out)
        elif event.type == "delta" and self._live and "response_id" in data:
            self._preview(int(data.get("offset", 0)), str(data.get("text", "")), out)
        elif event.type == STOPPING_EVENT:
            self._live = False  # nothing streamed after a stop is kept (common.preview)
        elif event.type == "reset":
            if data.get("scope") == "run":
                self._chunks.clear()
                self._durable, self._next_chunk = "", 0
            if self.sent:
                self._live = False
        elif event.type == "chunk":
            self._chunks[int(data["index"])] = str(data["text"])
            self._advance_durable(out)
        elif event.type in TERMINAL_EVENTS:
            self._advance_durable(out)
            out.append(Ended(event.type, self._durable))
        return out

    def _open(self, out: list[TextEvent]) -> None:
        if not self.opened:
            self.opened = True
            out.append(Opened())

    def _give(self, text: str, out: list[TextEvent]) -> None:
        self._open(out)
        self.sent += text
        out.append(TextDelta(text))

    def _preview(self, offset: int, text: str, out: list[TextEvent]) -> None:
        given = len(self.sent)
        if offset > given:
            self._live = False  # a preview row is missing: the chunks will fill in
            return
        fresh = text[given - offset :]
        if fresh:
            self._give(fresh, out)

    def _advance_durable(self, out: list[TextEvent]) -> None:
        while self._next_chunk in self._chunks:
            self._durable += self._chunks[self._next_chunk]
            self._next_chunk += 1
        if len(self._durable) <= len(self.sent):
            return
        if not self._durable.startswith(self.sent):
            # Only after text a reset took back (see the module docstring): what was
            # given stays as it is, and the final text is the durable answer.
            log.warning("text given to an OpenAI client differs from the durable answer")
            return
        self._give(self._durable[len(self.sent) :], out)


FinalObject = Callable[[], Awaitable[dict[str, Any]]]
"""The response object once the chat has ended (read from its record)."""


class ResponseEvents:
    """The Responses API stream of one response, numbered from 0 (`sequence_number`).

    Order (as OpenAI documents it, and as the simulator's contract tests check):
    `response.created`, `response.queued` (background), `response.in_progress`,
    `response.output_item.added`, `response.content_part.added`, the
    `response.output_text.delta`s, then for an answer `response.output_text.done`,
    `response.content_part.done`, `response.output_item.done` and
    `response.completed` / `response.incomplete`; for a failure or a cancellation
    `response.failed` (the API has no cancelled event: the object says `cancelled`).
    """

    def __init__(self, row: ResponseRow, final: FinalObject) -> None:
        self._row = row
        self._final = final
        self._text = AnswerText()
        self._seq = -1
        self._item_open = False

    def _event(self, type_: str, **fields: Any) -> dict[str, Any]:
        self._seq += 1
        return {"type": type_, **fields, "sequence_number": self._seq}

    def _part(self) -> dict[str, Any]:
        return {"item_id": message_id_for(self._row.response_id), "output_index": 0}

    def start(self) -> list[dict[str, Any]]:
        row = self._row
        if row.background:
            return [
                self._event("response.created", response=response_object(row, "queued")),
                self._event("response.queued", response=response_object(row, "queued")),
            ]
        return [
            self._event("response.created", response=response_object(row, "in_progress")),
            *self._open_item(),
        ]

    def _open_item(self) -> list[dict[str, Any]]:
        if self._item_open:
            return []
        self._item_open = True
        row = self._row
        return [
            self._event("response.in_progress", response=response_object(row, "in_progress")),
            self._event(
                "response.output_item.added",
                output_index=0,
                item=message_item(row.response_id, "in_progress", None),
            ),
            self._event(
                "response.content_part.added", **self._part(), content_index=0, part=text_part("")
            ),
        ]

    async def feed(self, event: ChatEvent) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for step in self._text.feed(event):
            if isinstance(step, Opened):
                out += self._open_item()
            elif isinstance(step, TextDelta):
                out.append(
                    self._event(
                        "response.output_text.delta",
                        **self._part(),
                        content_index=0,
                        delta=step.text,
                        logprobs=[],
                    )
                )
            else:
                out += await self._end(step)
        return out

    async def _end(self, ended: Ended) -> list[dict[str, Any]]:
        final = await self._final()
        status = final["status"]
        out: list[dict[str, Any]] = []
        if status in ("completed", "incomplete"):
            out += self._open_item()
            text = ended.text
            item_status = "completed" if status == "completed" else "incomplete"
            out += [
                self._event(
                    "response.output_text.done",
                    **self._part(),
                    content_index=0,
                    text=text,
                    logprobs=[],
                ),
                self._event(
                    "response.content_part.done",
                    **self._part(),
                    content_index=0,
                    part=text_part(text),
                ),
                self._event(
                    "response.output_item.done",
                    output_index=0,
                    item=message_item(self._row.response_id, item_status, text),
                ),
                self._event(f"response.{status}", response=final),
            ]
        else:
            out.append(self._event("response.failed", response=final))
        return out
