"""Request and response bodies of the gateway (the contract the UI and tests rely on)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

_ID_PATTERN = r"^[A-Za-z0-9._:@-]{1,200}$"


class StartChatBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(
        min_length=1,
        description="The user's message: not blank, no control characters other than "
        "newline and tab (else 422), at most MAX_PROMPT_CHARS characters (else 413).",
    )
    conversation_id: str | None = Field(
        default=None,
        pattern=_ID_PATTERN,
        description="The turns of the branch of this conversation the user is on (completed "
        "and stopped answers) are sent as context; the new chat becomes that branch's head.",
    )
    model: str | None = Field(default=None, max_length=200, description="Defaults to LLM_MODEL.")
    max_tokens: int | None = Field(default=None, ge=1, description="Answer length bound.")
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    cache: bool = Field(
        default=True,
        description="Answer from the answer cache when an identical request was answered "
        "recently (and let identical requests share one LLM call). false: always generate.",
    )
    idempotency_key: str | None = Field(
        default=None,
        pattern=_ID_PATTERN,
        description="The same key always maps to the same chat: a double submit starts one.",
    )


class TurnActionBody(BaseModel):
    """Regenerate or continue a chat."""

    model_config = ConfigDict(extra="forbid")

    idempotency_key: str | None = Field(
        default=None,
        pattern=_ID_PATTERN,
        description="The same key (for the same chat) always gives the same new chat.",
    )


class EditBody(TurnActionBody):
    prompt: str = Field(
        min_length=1, description="The new text of the user's message (as for a start)."
    )


class ChooseVersionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflow_id: str = Field(
        pattern=_ID_PATTERN, description="A chat of the conversation: its branch becomes current."
    )


class TurnOut(BaseModel):
    """One turn of the current branch: the user's message and its answer."""

    workflow_id: str = Field(description="The turn's chat (the first, if it was continued).")
    prompt: str
    stage: str = Field(description="The last chat's stage (of the continuations, if any).")
    answer: str = Field(description="The durable answer, continuations joined.")
    continued_by: list[str] = Field(description="Chats that continue this answer, in order.")
    versions: list[str] = Field(
        description="This turn's versions (regenerated or edited), oldest first; one is "
        "workflow_id."
    )
    continuable: bool = Field(description="Stopped or cut at the token limit: can be continued.")


class ConversationOut(BaseModel):
    conversation_id: str
    head_id: str | None = Field(description="The last chat of the current branch.")
    turns: list[TurnOut]


class StartChatResponse(BaseModel):
    workflow_id: str
    status: str
    temporal_ui_url: str


class UsageOut(BaseModel):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    estimated: bool = Field(
        default=False, description="Estimated from the text: the provider reported none."
    )


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
    cache_hit: bool = False
    generation_mode: str | None = Field(
        default=None,
        description="resume: a retried LLM call re-attaches to the same generation; "
        "restart: it starts a new one (the viewer sees a reset).",
    )
    cached_from: str | None = Field(default=None, description="The chat a cache hit reused.")
    finish_reason: str | None = Field(
        default=None,
        description="How the answer ended: stop (the model finished), length (cut at "
        "max_tokens), content_filter (stopped by the provider's filter).",
    )
    notice: str | None = Field(
        default=None,
        description="What a person should know about this answer, e.g. 'Cut at 512 tokens'.",
    )
    error_type: str | None = Field(
        default=None,
        description="For a failed chat, the kind of failure (e.g. ProviderOutageError).",
    )
    retryable: bool = Field(
        default=False,
        description="A failed chat that POST /api/workflows/{id}/retry can ask again "
        "(the provider was unavailable or failed).",
    )
    retry_of: str | None = Field(default=None, description="The chat this one retried.")
    llm_calls: int = Field(
        default=0, description="Generations the provider ran for this chat (retries included)."
    )
    billed_usage: UsageOut | None = Field(
        default=None,
        description="Tokens billed over every LLM call of this chat (usage is the answer's).",
    )
    priced: bool = Field(
        default=True, description="false: the model has no price, cost_usd is unknown."
    )
    cost_usd: float | None = Field(
        default=None,
        description="Estimated LLM cost of every call of this chat; null when unpriced.",
    )
    saved_usd: float | None = Field(default=None, description="For a cache hit: cost avoided.")
    saved_ms: int | None = Field(
        default=None, description="For a cache hit: generation time avoided."
    )
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


class Stats(BaseModel):
    """Totals over every chat in the database."""

    generations: int = Field(description="Chats (one ChatStreamingWorkflow each).")
    llm_calls: int = Field(
        description="Generations the provider ran, every attempt counted: a retry that "
        "started over, a new generation after a provider failure (a re-attach to the same "
        "background generation is the same call; cache hits make none)."
    )
    chats_with_llm_calls: int = Field(description="Chats that called the LLM at least once.")
    cache_hits: int
    prompt_tokens: int = Field(description="Billed prompt tokens over every LLM call.")
    completion_tokens: int = Field(description="Billed completion tokens over every LLM call.")
    usage_estimated: bool = Field(
        description="Some counts are estimates (a provider that reports no usage, a call "
        "cut off by a dead worker)."
    )
    cost_usd: float | None = Field(
        description="Estimated cost of the priced LLM calls; null when none is priced."
    )
    unpriced_llm_calls: int = Field(
        description="LLM calls of models with no price in LLM_PRICES: their cost is "
        "unknown, not zero."
    )
    saved_usd: float = Field(description="Cost avoided by cache hits.")
    saved_ms: int = Field(description="Generation time avoided by cache hits.")


class ErrorBody(BaseModel):
    """Every error the gateway answers: a message for people (422 adds field details)."""

    detail: str | list[dict[str, object]]


def _error(description: str) -> dict[str, object]:
    return {"model": ErrorBody, "description": description}


ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    401: _error("No valid API key."),
    404: _error("No such chat (or not yours)."),
    422: _error("Malformed request or invalid prompt."),
    429: _error("Over a per-user limit; see Retry-After."),
    503: _error("Temporal or PostgreSQL unavailable; see Retry-After."),
}


class OpenAIError(BaseModel):
    """OpenAI's error object (`openai.types.shared.ErrorObject`)."""

    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorBody(BaseModel):
    """Every error under /v1: OpenAI's shape, which the openai SDKs parse."""

    error: OpenAIError


def _v1_error(description: str) -> dict[str, object]:
    return {"model": OpenAIErrorBody, "description": description}


V1_ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    400: _v1_error("Malformed or unsupported request (param names the field)."),
    401: _v1_error("No valid API key."),
    404: _v1_error("No such response (or not yours), model or URL."),
    409: _v1_error("Idempotency-Key reused with another body; delete of a running response."),
    429: _v1_error("Over a per-user limit; see Retry-After."),
    503: _v1_error("Temporal or PostgreSQL unavailable; see Retry-After."),
}
#: A 200 that is a JSON object, or with `stream=true` a Server-Sent Events stream.
JSON_OR_SSE: dict[int | str, dict[str, object]] = {
    200: {
        "description": "The object, or with stream=true its event stream.",
        "content": {"application/json": {}, "text/event-stream": {}},
    }
}
