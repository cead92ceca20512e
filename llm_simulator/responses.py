"""OpenAI Responses API subset: request parsing, stored responses and their wire format.

A response wraps one :class:`~llm_simulator.engine.Generation`. Its server-sent events are a
pure function of the generation's state, so they are never stored: the event with a given
``sequence_number`` is the same for every reader, whenever it attaches. The numbering is::

    0                       response.created
    1                       response.in_progress
    2                       response.output_item.added
    3                       response.content_part.added
    4 .. 4+n-1              response.output_text.delta   (one per token, n tokens)
    4+n                     response.output_text.done
    5+n                     response.content_part.done
    6+n                     response.output_item.done
    7+n                     response.completed

A response cancelled after ``k`` tokens ends instead with one ``response.incomplete`` event at
``4+k`` whose ``response.status`` is ``"cancelled"`` (the API has no ``response.cancelled``
stream event; ``response.incomplete`` is the closest type the ``openai`` client knows).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llm_simulator.engine import Generation, GenerationStatus
from llm_simulator.protocol import ApiError, prompt_token_count, validate_model

#: Events sent before the first token: created, in_progress, output_item.added,
#: content_part.added.
PREAMBLE_EVENTS = 4

ResponseStatus = Literal["queued", "in_progress", "completed", "cancelled", "failed", "incomplete"]


class _InputTextPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["input_text", "output_text"]
    text: str


class ResponseInputMessage(BaseModel):
    """One message item of ``input``; only text content is supported."""

    model_config = ConfigDict(extra="allow")

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[_InputTextPart]

    def text(self) -> str:
        """The textual content (text parts joined by newlines, as for chat messages)."""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content)


class ResponseCreateRequest(BaseModel):
    """The subset of ``POST /v1/responses`` the simulator honours.

    Unknown OpenAI parameters (``tools``, ``metadata``, ...) are accepted and ignored; the ones
    that would change the meaning of the request and are not simulated are refused.
    """

    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1)
    input: str | list[ResponseInputMessage]
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    background: bool | None = None
    stream: bool | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    conversation: Any = None

    def chat_messages(self) -> list[dict[str, Any]]:
        """The equivalent chat messages: instructions as a system message, then the input.

        This is what the text is generated from, so a chat completion with these messages (and
        the same model, max tokens and temperature) produces exactly the same text.
        """
        messages: list[dict[str, Any]] = []
        if self.instructions:
            messages.append({"role": "system", "content": self.instructions})
        if isinstance(self.input, str):
            messages.append({"role": "user", "content": self.input})
        else:
            messages.extend({"role": item.role, "content": item.text()} for item in self.input)
        return messages


def parse_response_request(payload: dict[str, Any]) -> ResponseCreateRequest:
    """Validate a create body; raise :class:`ApiError` (400) if invalid or not simulated."""
    body = validate_model(ResponseCreateRequest, payload)
    for param in ("previous_response_id", "conversation"):
        if getattr(body, param) is not None:
            raise ApiError(
                400,
                f"'{param}' is not supported by the simulator; send the whole conversation "
                "as 'input'.",
                code="unsupported_parameter",
                param=param,
            )
    if body.background and body.store is False:
        raise ApiError(
            400,
            "Background mode requires 'store' to be true.",
            code="invalid_value",
            param="store",
        )
    return body


def last_user_prompt(messages: list[dict[str, Any]]) -> str:
    """Content of the last ``user`` message ("" if there is none): the key of the stats."""
    for message in reversed(messages):
        if message["role"] == "user":
            return str(message["content"])
    return ""


@dataclass(eq=False, slots=True)
class ResponseRecord:
    """One response: its generation and the request parameters it echoes."""

    id: str
    message_id: str
    generation: Generation
    model: str
    instructions: str | None
    max_output_tokens: int | None  # as requested (None: the simulator's default was used)
    temperature: float
    background: bool
    store: bool
    input_tokens: int

    @classmethod
    def create(
        cls, generation: Generation, body: ResponseCreateRequest, temperature: float
    ) -> ResponseRecord:
        """A record for ``generation``, created from ``body``; ids derive from the generation."""
        suffix = generation.id.removeprefix("gen_")
        return cls(
            id=f"resp_{suffix}",
            message_id=f"msg_{suffix}",
            generation=generation,
            model=body.model,
            instructions=body.instructions,
            max_output_tokens=body.max_output_tokens,
            temperature=temperature,
            background=bool(body.background),
            store=body.store is not False,
            input_tokens=prompt_token_count(
                str(message["content"]) for message in generation.request.messages
            ),
        )

    @property
    def status(self) -> ResponseStatus:
        """``in_progress`` until the generation is terminal, then ``completed``/``cancelled``."""
        if self.generation.status is GenerationStatus.FINISHED:
            return "completed"
        if self.generation.status is GenerationStatus.CANCELLED:
            return "cancelled"
        return "in_progress"

    # -- wire format -------------------------------------------------------------------------

    def _usage(self, output_tokens: int) -> dict[str, Any]:
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

    def _message_item(
        self, status: Literal["in_progress", "completed", "incomplete"], text: str | None
    ) -> dict[str, Any]:
        return {
            "id": self.message_id,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": [] if text is None else [self._text_part(text)],
        }

    def _object(
        self,
        status: ResponseStatus,
        output: list[dict[str, Any]],
        usage: dict[str, Any] | None,
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
            "error": None,
            "incomplete_details": None,
            "instructions": self.instructions,
            "max_output_tokens": self.max_output_tokens,
            "metadata": {},
            "model": self.model,
            "output": output,
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            "store": self.store,
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
        return self._object("queued" if self.background else "in_progress", [], None)

    def current_object(self) -> dict[str, Any]:
        """The response now: status, the output produced so far, usage once it is terminal."""
        generation = self.generation
        text = "".join(generation.tokens[: generation.produced])
        status = self.status
        item_status: Literal["in_progress", "completed", "incomplete"] = (
            "completed"
            if status == "completed"
            else "incomplete"
            if status == "cancelled"
            else "in_progress"
        )
        usage = self._usage(generation.produced) if generation.done else None
        return self._object(status, [self._message_item(item_status, text)], usage)

    def preamble_events(self) -> list[dict[str, Any]]:
        """Events ``0 .. PREAMBLE_EVENTS-1``, all sent as soon as the response is created."""
        return [
            {"type": "response.created", "response": self.initial_object(), "sequence_number": 0},
            {
                "type": "response.in_progress",
                "response": self._object("in_progress", [], None),
                "sequence_number": 1,
            },
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": self._message_item("in_progress", None),
                "sequence_number": 2,
            },
            {
                "type": "response.content_part.added",
                "item_id": self.message_id,
                "output_index": 0,
                "content_index": 0,
                "part": self._text_part(""),
                "sequence_number": 3,
            },
        ]

    def delta_event(self, index: int) -> dict[str, Any]:
        """The ``response.output_text.delta`` event of token ``index``."""
        return {
            "type": "response.output_text.delta",
            "item_id": self.message_id,
            "output_index": 0,
            "content_index": 0,
            "delta": self.generation.tokens[index],
            "logprobs": [],
            "sequence_number": PREAMBLE_EVENTS + index,
        }

    def tail_events(self) -> list[dict[str, Any]]:
        """The events after the last delta; only valid once the generation is terminal."""
        generation = self.generation
        seq = PREAMBLE_EVENTS + generation.produced
        if generation.status is not GenerationStatus.FINISHED:
            return [
                {
                    "type": "response.incomplete",
                    "response": self.current_object(),
                    "sequence_number": seq,
                }
            ]
        text = "".join(generation.tokens)
        return [
            {
                "type": "response.output_text.done",
                "item_id": self.message_id,
                "output_index": 0,
                "content_index": 0,
                "text": text,
                "logprobs": [],
                "sequence_number": seq,
            },
            {
                "type": "response.content_part.done",
                "item_id": self.message_id,
                "output_index": 0,
                "content_index": 0,
                "part": self._text_part(text),
                "sequence_number": seq + 1,
            },
            {
                "type": "response.output_item.done",
                "output_index": 0,
                "item": self._message_item("completed", text),
                "sequence_number": seq + 2,
            },
            {
                "type": "response.completed",
                "response": self.current_object(),
                "sequence_number": seq + 3,
            },
        ]


def encode_event(event: dict[str, Any]) -> bytes:
    """One server-sent event: ``event: <type>`` and ``data: <json>``."""
    data = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    return f"event: {event['type']}\ndata: {data}\n\n".encode()


def not_found(response_id: str) -> ApiError:
    """The 404 of an unknown, unstored or expired response id."""
    return ApiError(
        404,
        f"Response with id '{response_id}' not found.",
        code="not_found",
        param="response_id",
    )


class ResponseStore:
    """Stored responses by id, each kept until ``ttl_s`` seconds after it became terminal.

    Contract: running responses are never evicted; a completed or cancelled one is retrievable
    for ``ttl_s`` seconds after it ended, then :meth:`get` no longer finds it. Expired records are
    dropped whenever the store is used, so memory holds only running responses and those that
    ended within the last ``ttl_s`` seconds. Must be used from the event loop thread.
    """

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._records: dict[str, ResponseRecord] = {}

    def __len__(self) -> int:
        return len(self._records)

    def add(self, record: ResponseRecord) -> None:
        """Store ``record`` (and drop the expired ones)."""
        self.evict_expired()
        self._records[record.id] = record

    def get(self, response_id: str) -> ResponseRecord:
        """The stored, unexpired response ``response_id``; raise a 404 :class:`ApiError`."""
        self.evict_expired()
        record = self._records.get(response_id)
        if record is None:
            raise not_found(response_id)
        return record

    def remove(self, response_id: str) -> ResponseRecord:
        """Forget ``response_id`` and return it; raise a 404 :class:`ApiError` if unknown."""
        record = self.get(response_id)
        del self._records[response_id]
        return record

    def _expired(self, record: ResponseRecord, now: float) -> bool:
        ended = record.generation.ended_monotonic
        return record.generation.done and ended is not None and now - ended >= self.ttl_s

    def evict_expired(self) -> int:
        """Drop every response that ended more than ``ttl_s`` seconds ago; return how many."""
        now = time.monotonic()
        expired = [rid for rid, record in self._records.items() if self._expired(record, now)]
        for response_id in expired:
            del self._records[response_id]
        return len(expired)
