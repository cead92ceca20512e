"""Configuration of the LLM simulator, read from ``SIM_*`` environment variables."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class FaultKind(StrEnum):
    """A failure the simulator can inject into upcoming generation requests.

    * ``none``: no fault.
    * ``http_429``: answer ``429`` with a ``Retry-After`` header; no generation is started.
    * ``http_500``: answer ``500``; no generation is started.
    * ``disconnect``: start the generation, deliver a few tokens, then cut the TCP connection
      (no final chunk, no ``[DONE]``); the generation counts as started, never as completed.
      Exception: a Responses API response created with ``background=true`` keeps running on
      the server (and completes); only the connection is lost, and a client can re-attach with
      ``GET /v1/responses/{id}?stream=true&starting_after=N``.

    Faults apply to generation requests only (``POST /v1/chat/completions`` and
    ``POST /v1/responses``), never to retrieving, resuming or cancelling a response.
    """

    NONE = "none"
    HTTP_429 = "http_429"
    HTTP_500 = "http_500"
    DISCONNECT = "disconnect"


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
        description="For the disconnect fault: tokens delivered before the connection is cut.",
    )
    retry_after_s: int = Field(
        default=1, ge=0, description="Value of the Retry-After header sent with a 429 fault."
    )
    response_ttl_s: float = Field(
        default=600.0,
        ge=0,
        description="Responses API: seconds a finished (completed or cancelled) response stays "
        "retrievable and resumable by id; afterwards it is forgotten and its id answers 404.",
    )
