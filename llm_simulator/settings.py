"""Configuration of the LLM simulator, read from ``SIM_*`` environment variables."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class FaultKind(StrEnum):
    """A failure the simulator can inject into upcoming generation requests.

    Faults apply to generation requests only (``POST /v1/chat/completions`` and
    ``POST /v1/responses``), never to retrieving, resuming or cancelling a response. A fault
    that acts "after ``after_tokens`` tokens" acts after the last token instead when the reply
    is shorter, so an armed fault always fires.

    Refusals (no generation is started):

    * ``http_429``: answer ``429`` with a ``Retry-After`` header.
    * ``http_500``: answer ``500``.

    Provider faults (the generation itself ends differently, whoever watches it):

    * ``response_failed``: the generation fails after ``after_tokens`` tokens with error
      ``code``. Responses API: ``response.failed`` (status ``failed``, ``error: {code,
      message}``), and a background response stays failed when retrieved. Chat completions: a
      streamed answer gets a ``data: {"error": {...}}`` chunk and ends; a non-streamed one an
      HTTP error (500 for ``server_error``, 429 for ``rate_limit_exceeded``, else 400).
    * ``content_filter``: the generation stops after ``after_tokens`` tokens. Responses API:
      ``response.incomplete`` with ``incomplete_details.reason == "content_filter"``; chat
      completions: ``finish_reason == "content_filter"``.
    * ``stuck_queued``: the generation never starts: a background response stays ``queued``
      (no tokens, no further events) until cancelled; any other request hangs before its
      first token until its client goes away.

    Connection faults (only the connection of the generation request is hit; a generation
    that belongs to its connection, i.e. a chat completion or a Responses API response without
    ``background``, follows it, while a background response runs on at the provider):

    * ``disconnect``: deliver ``after_tokens`` tokens, then cut the TCP connection (no final
      chunk, no ``[DONE]``, no terminal event). A connection-bound generation is cancelled (it
      counts as started, never as completed); a background one completes and can be
      re-attached with ``GET /v1/responses/{id}?stream=true&starting_after=N``.
    * ``stall``: after ``after_tokens`` tokens the connection sends nothing more, but stays
      open, for ``stall_s`` seconds, then goes on normally. A connection-bound generation is
      paused with it; a background one runs on, so a client that re-attaches gets the rest at
      once. No effect on a background create without ``stream`` (answered before any token).
    * ``error_event``: a Responses API stream gets the ``error`` event (code ``code``) after
      ``after_tokens`` tokens and ends. The event is part of the response's event history
      (it has its own ``sequence_number``). A background response runs on (re-attachable); a
      response without ``background`` is cancelled there. On any other request (chat
      completions, a create without ``stream``) it acts like ``response_failed``.
    """

    NONE = "none"
    HTTP_429 = "http_429"
    HTTP_500 = "http_500"
    DISCONNECT = "disconnect"
    RESPONSE_FAILED = "response_failed"
    CONTENT_FILTER = "content_filter"
    STUCK_QUEUED = "stuck_queued"
    STALL = "stall"
    ERROR_EVENT = "error_event"


#: Error codes a simulated failure can carry: those of OpenAI's ``ResponseError.code`` that a
#: text-only generation can meet (``server_error`` is transient, ``invalid_prompt`` is not).
FaultErrorCode = Literal[
    "server_error",
    "rate_limit_exceeded",
    "invalid_prompt",
    "vector_store_timeout",
    "bio_policy",
    "misalignment_policy_violation",
    "data_residency_mismatch",
]


class SimulatorSettings(BaseSettings):
    """Settings of the simulator process.

    Every field can be set through the environment variable ``SIM_<FIELD NAME>``
    (case-insensitive), e.g. ``SIM_PORT=8301``.
    """

    model_config = SettingsConfigDict(env_prefix="SIM_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Interface the HTTP server binds to.")
    port: int = Field(default=8300, ge=0, le=65535, description="TCP port of the HTTP server.")
    ttft_ms: int = Field(
        default=400, ge=0, description="Time to first token of every generation, in milliseconds."
    )
    tokens_per_second: float = Field(
        default=40.0, gt=0, description="Token production rate after the first token."
    )
    default_max_tokens: int = Field(
        default=300,
        ge=1,
        description="Completion length when the request sets neither max_tokens nor "
        "max_completion_tokens.",
    )
    max_tokens_limit: int = Field(
        default=8192, ge=1, description="Requests asking for more tokens than this get a 400."
    )
    fault: FaultKind = Field(
        default=FaultKind.NONE, description="Fault armed at start-up (see FaultKind)."
    )
    fault_count: int = Field(
        default=0,
        ge=0,
        description="How many upcoming generation requests get the start-up fault (0 = none).",
    )
    fault_after_tokens: int = Field(
        default=10,
        ge=0,
        description="Tokens produced or delivered before a fault that takes after_tokens acts "
        "(disconnect, stall, error_event, response_failed, content_filter).",
    )
    fault_code: FaultErrorCode = Field(
        default="server_error",
        description="Error code of a response_failed or error_event fault "
        "(e.g. invalid_prompt for a failure that retrying does not fix).",
    )
    fault_stall_s: float = Field(
        default=60.0,
        ge=0,
        description="For the stall fault: seconds the connection stays silent but open.",
    )
    retry_after_s: int = Field(
        default=1, ge=0, description="Value of the Retry-After header sent with a 429 fault."
    )
    response_ttl_s: float = Field(
        default=600.0,
        ge=0,
        description="Responses API: seconds a finished (completed, incomplete, failed or "
        "cancelled) response stays retrievable and resumable by id; afterwards it is forgotten "
        "and its id answers 404.",
    )
    context_window: int = Field(
        default=128_000,
        ge=1,
        description="Context window of every model, in tokens: a request whose input tokens "
        "plus requested output tokens exceed it gets a 400 context_length_exceeded.",
    )
    background_supported: bool = Field(
        default=True,
        description="Whether the Responses API offers background mode. When false (like "
        "llama.cpp's server) 'background' is ignored, responses are not stored, and "
        "retrieving or cancelling one by id answers 404.",
    )
