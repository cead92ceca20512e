"""OpenAI Responses API subset: request parsing and the store of responses by id.

A response is a :class:`~llm_simulator.response_log.ResponseRecord` (its generation and its
event log); this module parses ``POST /v1/responses`` bodies and keeps the records that can be
retrieved, resumed and cancelled by id.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llm_simulator.protocol import ApiError, validate_model
from llm_simulator.response_log import ResponseRecord


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


def parse_response_request(
    payload: dict[str, Any], *, background_supported: bool = True
) -> ResponseCreateRequest:
    """Validate a create body; raise :class:`ApiError` (400) if invalid or not simulated.

    Without ``background_supported`` the ``background`` parameter is dropped (set to ``None``)
    before anything else looks at it, as a server without background mode ignores it.
    """
    body = validate_model(ResponseCreateRequest, payload)
    if not background_supported:
        body.background = None
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

    Contract: running (or queued) responses are never evicted; a finished one (completed,
    incomplete, failed or cancelled) is retrievable for ``ttl_s`` seconds after it ended, then
    :meth:`get` no longer finds it. Expired records are dropped whenever the store is used, so
    memory holds only running responses and those that ended within the last ``ttl_s``
    seconds. Must be used from the event loop thread.
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
