"""Request and response bodies of the gateway (the contract the UI and tests rely on)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

_ID_PATTERN = r"^[A-Za-z0-9._:@-]{1,200}$"


class StartChatBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(description="The user's message.")
    conversation_id: str | None = Field(
        default=None,
        pattern=_ID_PATTERN,
        description="Earlier completed turns of this conversation are sent as context.",
    )
    model: str | None = Field(default=None, max_length=200, description="Defaults to LLM_MODEL.")
    max_tokens: int | None = Field(default=None, ge=1, description="Answer length bound.")
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    idempotency_key: str | None = Field(
        default=None,
        pattern=_ID_PATTERN,
        description="The same key always maps to the same chat: a double submit starts one.",
    )


class StartChatResponse(BaseModel):
    workflow_id: str
    status: str
    temporal_ui_url: str


class UsageOut(BaseModel):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class ChatStatus(BaseModel):
    workflow_id: str
    status: str = Field(
        description="running, completed, failed, cancelled, terminated or timed_out"
    )
    stage: str = Field(description="queued, validating, generating, checkpointing or a final stage")
    progress: float = Field(description="Percent of chunks checkpointed, 0 to 100.")
    chunks_saved: int
    total_chunks: int | None
    error: str | None = None
    source: Literal["workflow", "postgres", "temporal"] = Field(
        description="Who answered: the live workflow (query), PostgreSQL, or Temporal alone."
    )
    model: str | None = None
    provider: str | None = None
    usage: UsageOut | None = None
    created_at: datetime | None = None
    completed_at: datetime | None = None
    duration_ms: int | None = None
    temporal_ui_url: str


class ChunkOut(BaseModel):
    id: int
    text: str
    worker: str
    attempt: int


class ChunkPage(BaseModel):
    workflow_id: str
    chunks: list[ChunkOut]
    next_from_id: int
    status: str


class CancelResponse(BaseModel):
    workflow_id: str
    status: str


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)
