"""OpenAI wire format: request validation, error bodies and chat completion payloads."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llm_simulator.text import count_tokens

_Model = TypeVar("_Model", bound=BaseModel)


class ApiError(Exception):
    """An error answered with an OpenAI-style body ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.error_type = error_type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body of the error response."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    @classmethod
    def provider_failure(cls, code: str, message: str) -> ApiError:
        """The error a failed generation surfaces as (an HTTP answer or a stream chunk): 500
        for ``server_error``, 429 for ``rate_limit_exceeded``, else 400 (not retryable)."""
        if code == "server_error":
            return cls(500, message, error_type="server_error", code=code)
        if code == "rate_limit_exceeded":
            return cls(429, message, error_type="requests", code=code)
        return cls(400, message, code=code)


def check_context_window(
    *, window: int, input_tokens: int, requested_output: int | None, api: str
) -> None:
    """Raise OpenAI's 400 ``context_length_exceeded`` if the input plus the requested output
    tokens do not fit ``window`` (an unset limit counts as 0, as the rest of the window is
    then what the model may write). ``api`` picks the wording: ``chat.completions`` (param
    ``messages``) or ``responses`` (param ``input``)."""
    output = requested_output or 0
    if input_tokens + output <= window:
        return
    if api == "responses":
        raise ApiError(
            400,
            "Your input exceeds the context window of this model. Please adjust your input "
            "and try again.",
            code="context_length_exceeded",
            param="input",
        )
    if requested_output:
        message = (
            f"This model's maximum context length is {window} tokens. However, you requested "
            f"{input_tokens + output} tokens ({input_tokens} in the messages, {output} in the "
            "completion). Please reduce the length of the messages or completion."
        )
    else:
        message = (
            f"This model's maximum context length is {window} tokens. However, your messages "
            f"resulted in {input_tokens} tokens. Please reduce the length of the messages."
        )
    raise ApiError(400, message, code="context_length_exceeded", param="messages")


class _TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    """One message of ``messages``; unknown fields (name, tool_calls, ...) are kept."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[_TextPart] | None = None

    def text(self) -> str:
        """The textual content (text parts joined by newlines)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content if part.text is not None)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool | None = None


class ChatCompletionRequest(BaseModel):
    """The subset of the chat completions request the simulator honours.

    Unknown OpenAI parameters are accepted and ignored. Types are checked strictly
    (e.g. ``"max_tokens": "5"`` is rejected).
    """

    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    n: int | None = Field(default=None, ge=1, le=1)
    stream: bool | None = None
    stream_options: StreamOptions | None = None

    def requested_max_tokens(self) -> int | None:
        """``max_completion_tokens`` if given, else ``max_tokens`` (``None`` if neither)."""
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens
        return self.max_tokens

    def include_usage(self) -> bool:
        """Whether a streamed response ends with a usage chunk."""
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    def wire_messages(self) -> list[dict[str, Any]]:
        """The messages as plain JSON (absent/null fields dropped)."""
        return [message.model_dump(mode="json", exclude_none=True) for message in self.messages]

    def last_user_prompt(self) -> str:
        """Text of the last ``user`` message ("" if there is none)."""
        for message in reversed(self.messages):
            if message.role == "user":
                return message.text()
        return ""

    def prompt_tokens(self) -> int:
        """Rough prompt size: words of all messages plus a small per-message overhead."""
        return prompt_token_count(message.text() for message in self.messages)


def prompt_token_count(message_texts: Iterable[str]) -> int:
    """Rough size of a prompt: words of every message plus 3 tokens of overhead per message.

    Shared by chat completions (``usage.prompt_tokens``) and the Responses API
    (``usage.input_tokens``), so both report the same number for the same messages.
    """
    return sum(count_tokens(text) + 3 for text in message_texts)


def _error_param(error: dict[str, Any]) -> str | None:
    loc = [str(part) for part in error.get("loc", ())]
    return ".".join(loc) if loc else None


def parse_chat_request(raw: bytes) -> ChatCompletionRequest:
    """Parse and validate a chat completions body; raise :class:`ApiError` (400) if invalid."""
    try:
        payload = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(
            400, f"The request body is not valid JSON: {exc}", code="invalid_json"
        ) from None
    if not isinstance(payload, dict):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_type")
    return validate_model(ChatCompletionRequest, payload)


def validate_model(model: type[_Model], payload: dict[str, Any]) -> _Model:
    """Validate ``payload`` as ``model``; a failure becomes an :class:`ApiError` (400)."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        param = _error_param(dict(first))
        if first["type"] == "missing":
            raise ApiError(
                400,
                f"Missing required parameter: '{param}'.",
                code="missing_required_parameter",
                param=param,
            ) from None
        raise ApiError(
            400,
            f"Invalid value for '{param}': {first['msg']}.",
            code="invalid_value",
            param=param,
        ) from None


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """The ``usage`` object."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_completion(
    *,
    completion_id: str,
    created: int,
    model: str,
    content: str,
    finish_reason: str,
    prompt_tokens: int,
    completion_tokens: int,
) -> dict[str, Any]:
    """A complete (non-streaming) ``chat.completion`` object; it always carries ``usage``."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage(prompt_tokens, completion_tokens),
        "system_fingerprint": "fp_llm_simulator",
    }


class ChunkEncoder:
    """Builds the server-sent events of one streamed chat completion.

    Contract: the stream is ``role_event()``, then one ``token_event()`` per token, then
    ``finish_event()``, then ``usage_event()`` if usage was requested, then ``DONE``; a
    generation that fails ends instead with one ``error_event()`` (no finish chunk, no usage,
    no ``DONE``). When usage is requested (``stream_options.include_usage``) every chunk
    carries ``"usage": null`` except the usage chunk, whose ``choices`` is empty, as OpenAI
    documents.
    """

    DONE = b"data: [DONE]\n\n"

    def __init__(self, *, completion_id: str, created: int, model: str, include_usage: bool):
        self._base = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_llm_simulator",
        }
        self._include_usage = include_usage

    @staticmethod
    def _event(payload: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"

    def _choice_chunk(self, delta: dict[str, Any], finish_reason: str | None) -> bytes:
        payload: dict[str, Any] = {
            **self._base,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if self._include_usage:
            payload["usage"] = None
        return self._event(payload)

    def role_event(self) -> bytes:
        """First chunk: announces the assistant role, empty content."""
        return self._choice_chunk({"role": "assistant", "content": ""}, None)

    def token_event(self, token: str) -> bytes:
        """One content token."""
        return self._choice_chunk({"content": token}, None)

    def finish_event(self, finish_reason: str) -> bytes:
        """Empty delta with the finish reason (``stop``, ``length`` or ``content_filter``)."""
        return self._choice_chunk({}, finish_reason)

    @classmethod
    def error_event(cls, error: ApiError) -> bytes:
        """A mid-stream error: ``data: {"error": {message, type, param, code}}``, which the
        ``openai`` client raises as ``APIError``."""
        return cls._event(error.body())

    def usage_event(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        """Final chunk with no choices and the usage (only sent if usage was requested)."""
        return self._event(
            {**self._base, "choices": [], "usage": usage(prompt_tokens, completion_tokens)}
        )
