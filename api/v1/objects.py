"""The wire objects of /v1, in the `openai` SDK's own shapes.

`tests/test_openai_api_contract.py` validates every object built here against the
installed SDK's pydantic types (`Response`, the stream events, `ChatCompletion`,
`ChatCompletionChunk`) with no field the SDK does not declare, as the simulator's
contract tests do for the provider side.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

from api.schemas import ChatStatus
from common.errors import ChatNotFoundError
from common.models import Stage
from storage import ResponseRow

ResponseStatus = Literal["queued", "in_progress", "completed", "incomplete", "failed", "cancelled"]

_RESPONSE_PREFIX = "resp_"
_COMPLETION_PREFIX = "chatcmpl-"
_CHAT_PREFIX = "chat-"
#: Failures the request itself caused: a new attempt fails the same way.
_PROMPT_ERRORS = {"InvalidPromptError", "ProviderRejectedError"}


# --- ids ------------------------------------------------------------------------------
# A response is a chat: resp_<32 hex> is chat-<the same uuid>, so either names the other.


def response_id_for(workflow_id: str) -> str:
    return _RESPONSE_PREFIX + uuid.UUID(workflow_id.removeprefix(_CHAT_PREFIX)).hex


def completion_id_for(workflow_id: str) -> str:
    return _COMPLETION_PREFIX + uuid.UUID(workflow_id.removeprefix(_CHAT_PREFIX)).hex


def workflow_id_of(response_id: str) -> str:
    """The chat of `resp_<hex>`; anything else is a 404 in OpenAI's words."""
    try:
        if not response_id.startswith(_RESPONSE_PREFIX):
            raise ValueError(response_id)
        chat_uuid = uuid.UUID(hex=response_id.removeprefix(_RESPONSE_PREFIX))
    except ValueError as err:
        raise not_found(response_id) from err
    return f"{_CHAT_PREFIX}{chat_uuid}"


def not_found(response_id: str) -> ChatNotFoundError:
    return ChatNotFoundError(response_id[:80], f"No response with id '{response_id[:80]}' found.")


def message_id_for(response_id: str) -> str:
    return "msg_" + response_id.removeprefix(_RESPONSE_PREFIX)


# --- what a chat's status means as a response ---------------------------------------


@dataclass(frozen=True)
class Outcome:
    """A chat's state in the Responses API's terms."""

    status: ResponseStatus
    incomplete_reason: str | None = None
    error: dict[str, str] | None = None
    finish_reason: str | None = None
    """Chat Completions' finish_reason of a finished answer (stop, length, content_filter)."""

    @property
    def done(self) -> bool:
        return self.status not in ("queued", "in_progress")

    @property
    def answered(self) -> bool:
        return self.status in ("completed", "incomplete")


def outcome_of(status: ChatStatus) -> Outcome:
    state = status.status
    if state == "running" and Stage(status.stage).is_final:
        # The record is final and the run is closing (its last activity beside it).
        state = status.stage
    if state == "running":
        return Outcome("queued" if status.stage == "queued" else "in_progress")
    if state == "completed":
        if status.finish_reason == "length":
            return Outcome("incomplete", "max_output_tokens", finish_reason="length")
        if status.finish_reason == "content_filter":
            return Outcome("incomplete", "content_filter", finish_reason="content_filter")
        return Outcome("completed", finish_reason="stop")
    if state in ("cancelled", "stopped"):  # a stopped answer's text stays in `output`
        return Outcome("cancelled")
    code = "invalid_prompt" if status.error_type in _PROMPT_ERRORS else "server_error"
    message = status.error or f"The chat ended: {state}."
    if state == "terminated" and not status.error:
        message = "Terminated by an operator in Temporal."
    return Outcome("failed", error={"code": code, "message": message})


def usage_of(status: ChatStatus) -> tuple[int, int] | None:
    """(input, output) tokens of the answer, once known."""
    usage = status.usage
    if usage is None or usage.completion_tokens is None:
        return None
    return usage.prompt_tokens or 0, usage.completion_tokens


# --- Responses API --------------------------------------------------------------------


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(response_id: str, status: str, text: str | None) -> dict[str, Any]:
    return {
        "id": message_id_for(response_id),
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [] if text is None else [text_part(text)],
    }


def response_object(
    row: ResponseRow,
    status: ResponseStatus,
    *,
    text: str | None = None,
    outcome: Outcome | None = None,
    usage: tuple[int, int] | None = None,
    completed_at: float | None = None,
) -> dict[str, Any]:
    """The response object (`openai.types.responses.Response`). `text` None: no output
    item yet; `usage` only once the answer is final."""
    params = row.params
    item_status = (
        "completed"
        if status == "completed"
        else "in_progress"
        if status in ("queued", "in_progress")
        else "incomplete"
    )
    output = [] if text is None else [message_item(row.response_id, item_status, text)]
    return {
        "id": row.response_id,
        "object": "response",
        "created_at": int(row.created_at.timestamp()),
        "status": status,
        "background": row.background,
        "completed_at": int(completed_at) if status == "completed" and completed_at else None,
        "error": outcome.error if outcome is not None and status == "failed" else None,
        "incomplete_details": (
            {"reason": outcome.incomplete_reason}
            if outcome is not None and status == "incomplete"
            else None
        ),
        "instructions": params.get("instructions"),
        "max_output_tokens": params.get("max_output_tokens"),
        "metadata": params.get("metadata") or {},
        "model": params["model"],
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": params.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "temperature": params.get("temperature"),
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": None if usage is None else responses_usage(*usage),
        "user": params.get("user"),
    }


def responses_usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def deleted_object(response_id: str) -> dict[str, Any]:
    return {"id": response_id, "object": "response", "deleted": True}


# --- Chat Completions -----------------------------------------------------------------


def chat_completion(
    workflow_id: str,
    created: int,
    model: str,
    text: str,
    finish_reason: str,
    usage: tuple[int, int] | None,
) -> dict[str, Any]:
    """`openai.types.chat.ChatCompletion` with one choice."""
    return {
        "id": completion_id_for(workflow_id),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "finish_reason": finish_reason,
                "logprobs": None,
            }
        ],
        "usage": None if usage is None else completion_usage(*usage),
    }


def completion_usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_chunk(
    workflow_id: str,
    created: int,
    model: str,
    delta: dict[str, Any] | None,
    finish_reason: str | None = None,
    usage: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """`openai.types.chat.ChatCompletionChunk`: a delta (or a finish) of the one choice,
    or, with `delta` None, the usage chunk that `stream_options.include_usage` asks for."""
    chunk: dict[str, Any] = {
        "id": completion_id_for(workflow_id),
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": (
            []
            if delta is None
            else [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]
        ),
    }
    if usage is not None:
        chunk["usage"] = completion_usage(*usage)
    return chunk
