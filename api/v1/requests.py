"""What a /v1 create request asks for, checked and turned into one chat's turns.

Both creates (`POST /v1/responses`, `POST /v1/chat/completions`) end as an `Asked`:
the prompt (the last user message), the earlier turns, the system prompt
(`instructions` and system/developer messages), and the generation parameters.
Anything durable-chat cannot honour is a 400 that names the parameter, never a
silent drop: tools, images, files, structured outputs, sampling knobs it does not
forward (docs/openai-api.md has the table).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from common.errors import InvalidRequestError
from common.models import Turn
from common.settings import Settings

_SYSTEM_ROLES = ("system", "developer")
_TEXT_PARTS = {"input_text", "output_text", "text"}
#: Parameters accepted and ignored: they change nothing a text answer depends on.
_IGNORED = frozenset(
    {
        "user",
        "prompt_cache_key",
        "safety_identifier",
        "parallel_tool_calls",
        "service_tier",
        "stream_options",  # Responses: include_obfuscation, which nothing here adds
    }
)


def _neutral(name: str, value: Any) -> bool:
    """Whether an optional parameter holds the value that means 'not used'."""
    if value is None or name in _IGNORED:
        return True
    if name == "text" and isinstance(value, dict):
        # Plain text, with or without a verbosity hint (a hint changes no protocol).
        return set(value) <= {"format", "verbosity"} and value.get("format") in (
            None,
            {"type": "text"},
        )
    neutral: dict[str, tuple[Any, ...]] = {
        "top_p": (1, 1.0),
        "n": (1,),
        "tools": ([],),
        "functions": ([],),
        "tool_choice": ("auto", "none"),
        "truncation": ("disabled",),
        "include": ([],),
        "modalities": (["text"],),
        "logprobs": (False,),
        "stream_options": (),
        "response_format": ({"type": "text"},),
        "reasoning": ({},),
        "frequency_penalty": (0, 0.0),
        "presence_penalty": (0, 0.0),
        "store": (True, False),
    }
    return value in neutral.get(name, ())


def unsupported(body: BaseModel, accepted: set[str]) -> None:
    """400 for the first parameter the body sets that durable-chat cannot honour."""
    for name, value in (body.model_extra or {}).items():
        if name in accepted or _neutral(name, value):
            continue
        what = {
            "tools": "Tools (function calling, web search, file search) are",
            "functions": "Function calling is",
            "tool_choice": "tool_choice is",
            "text": "Structured outputs (text.format other than text) are",
            "response_format": "Structured outputs (response_format other than text) are",
            "reasoning": "Reasoning options are",
            "n": "More than one choice (n > 1) is",
            "include": "include is",
        }.get(name, f"The parameter '{name}' is")
        raise InvalidRequestError(
            f"{what} not supported by durable-chat: it answers with text only "
            "(see docs/openai-api.md for what /v1 supports).",
            param=name,
            code="unsupported_parameter",
        )


class ResponseCreateBody(BaseModel):
    """`POST /v1/responses` (what the openai SDK's `responses.create` sends)."""

    model_config = ConfigDict(extra="allow")

    input: str | list[dict[str, Any]]
    model: str | None = None
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    stream: bool = False
    background: bool = False
    store: bool = True
    metadata: dict[str, str] | None = Field(default=None, max_length=16)
    previous_response_id: str | None = None


class ChatCompletionBody(BaseModel):
    """`POST /v1/chat/completions`."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    store: bool = False
    metadata: dict[str, str] | None = Field(default=None, max_length=16)

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


@dataclass
class Asked:
    """One create request, as the chat that answers it needs it."""

    prompt: str
    history: list[Turn]
    system_prompt: str | None
    model: str
    max_tokens: int
    temperature: float
    params: dict[str, Any] = field(default_factory=dict)
    """What the response object echoes (model, instructions, metadata, ...)."""


def request_hash(body: BaseModel) -> str:
    """The fingerprint of a create body: a retry with the same Idempotency-Key must match."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _text_of(content: Any, where: str) -> str:
    """The text of a message's content: a string, or a list of text parts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequestError(
            "A message's content must be a string or a list of text parts.", param=where
        )
    texts: list[str] = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in _TEXT_PARTS or not isinstance(part.get("text"), str):
            raise InvalidRequestError(
                f"Content of type {kind!r} is not supported by durable-chat: images, audio "
                "and files cannot be sent, only text.",
                param=f"{where}[{index}].type",
                code="unsupported_content",
            )
        texts.append(part["text"])
    return "".join(texts)


def split_messages(
    messages: list[dict[str, Any]], param: str, allowed_kinds: tuple[str | None, ...]
) -> tuple[list[str], list[Turn], str]:
    """System texts, earlier turns, and the prompt (the last message, which must be
    the user's) of a list of input messages."""
    system: list[str] = []
    turns: list[Turn] = []
    for index, message in enumerate(messages):
        where = f"{param}[{index}]"
        if not isinstance(message, dict):
            raise InvalidRequestError("Each input item must be an object.", param=where)
        kind = message.get("type")
        if kind not in allowed_kinds:
            raise InvalidRequestError(
                f"Input items of type {kind!r} are not supported by durable-chat (tool calls "
                "and their outputs, reasoning items, item references); send messages.",
                param=f"{where}.type",
                code="unsupported_content",
            )
        role = message.get("role")
        if message.get("tool_calls") or message.get("function_call"):
            raise InvalidRequestError(
                "Tool calls are not supported by durable-chat.", param=f"{where}.tool_calls"
            )
        if role not in ("user", "assistant", *_SYSTEM_ROLES):
            raise InvalidRequestError(
                f"Messages with role {role!r} are not supported by durable-chat: use "
                "user, assistant, system or developer.",
                param=f"{where}.role",
            )
        text = _text_of(message.get("content"), f"{where}.content")
        if role in _SYSTEM_ROLES:
            system.append(text)
        else:
            turns.append(Turn(role=str(role), content=text))
    if not turns or turns[-1].role != "user":
        raise InvalidRequestError(
            "The last message must be the user's: it is the prompt to answer.", param=param
        )
    return system, turns[:-1], turns[-1].content


def generation_bounds(
    settings: Settings, max_tokens: int | None, temperature: float | None, param: str
) -> tuple[int, float]:
    if max_tokens is not None and max_tokens > settings.max_tokens_limit:
        raise InvalidRequestError(
            f"{param} {max_tokens} is above this deployment's limit of "
            f"{settings.max_tokens_limit}.",
            param=param,
            code="integer_above_max_value",
        )
    return (
        max_tokens or settings.default_max_tokens,
        0.7 if temperature is None else temperature,
    )


def allowed_models(settings: Settings) -> list[str]:
    """The models /v1 accepts and lists: ALLOWED_MODELS."""
    return settings.model_allowlist


def join_system(parts: list[str | None]) -> str | None:
    texts = [p for p in parts if p]
    return "\n\n".join(texts) if texts else None
