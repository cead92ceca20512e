"""The dataclasses that cross the workflow boundary.

Every workflow, activity and query takes one dataclass and returns one. Fields
have defaults where possible so a field can be added without breaking the
histories of chats already running (Temporal stores these as JSON).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Stage(StrEnum):
    """Where a chat is in its life; the `progress` query and the database agree on these."""

    QUEUED = "queued"
    VALIDATING = "validating"
    GENERATING = "generating"
    CHECKPOINTING = "checkpointing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    """Cancelled before the answer had any text: nothing is kept."""
    STOPPED = "stopped"
    """Stopped by its user (or any cancel) while the answer was being written: the text
    shown up to the stop is kept as the answer's chunks."""
    TERMINATED = "terminated"
    """Ended by an operator (Terminate in the Temporal UI or CLI); written by the reconciler."""
    TIMED_OUT = "timed_out"
    """The workflow execution timeout expired; written by the reconciler."""

    @property
    def is_final(self) -> bool:
        return self in _FINAL_STAGES


_FINAL_STAGES = frozenset(
    {
        Stage.COMPLETED,
        Stage.FAILED,
        Stage.CANCELLED,
        Stage.STOPPED,
        Stage.TERMINATED,
        Stage.TIMED_OUT,
    }
)


class GenerationMode(StrEnum):
    """How generate_full_text talks to the provider, and what a retry does.

    RESUME: OpenAI Responses API in background mode; a retry re-attaches to the same
    generation (paid once, the viewer's text continues). RESTART: plain chat
    completions; a retry starts a new generation and viewers get a `reset`.
    """

    RESUME = "resume"
    RESTART = "restart"
    AUTO = "auto"
    """Chosen by each worker from what its endpoint can do (probed at worker start)."""


class FinishReason(StrEnum):
    """How the provider ended a generation that produced an answer (kept and shown).

    STOP: the model finished. LENGTH: cut at `max_tokens` (OpenAI's Responses API says
    `incomplete` / `max_output_tokens`). CONTENT_FILTER: the provider's filter stopped it;
    what was produced is kept, with a notice.
    """

    STOP = "stop"
    LENGTH = "length"
    CONTENT_FILTER = "content_filter"


@dataclass
class Turn:
    """One message of a conversation as sent to the LLM."""

    role: str
    content: str


@dataclass
class Usage:
    """Token counts reported by the provider (or counted when it reports none)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False
    """True when the provider reported no usage and the counts are estimated from text."""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class ChatRequest:
    """Input of `ChatStreamingWorkflow`: one user turn and everything needed to answer it."""

    prompt: str
    conversation_id: str | None = None
    history: list[Turn] = field(default_factory=list)
    model: str = "simulator"
    provider: str = "simulator"
    max_tokens: int = 512
    temperature: float = 0.7
    system_prompt: str | None = None
    user_id: str = "anonymous"
    chunk_target_chars: int = 120
    checkpoint_window: int = 16
    max_prompt_chars: int = 32_000
    use_cache: bool = False
    cache_ttl_s: int = 3600
    generation_mode: GenerationMode = GenerationMode.RESTART
    retry_of: str | None = None
    """The failed chat this one retries (POST /api/workflows/{id}/retry)."""
    parent_id: str | None = None
    """The chat whose answer this turn follows in its branch of the conversation (None:
    the first turn)."""
    variant_of: str | None = None
    """Regenerate or edit: the chat this one is another version of (the same parent)."""
    continues: str | None = None
    """Continue: the chat whose cut or stopped answer this one carries on."""


@dataclass
class ChatResult:
    """Result of `ChatStreamingWorkflow`; the text itself lives in PostgreSQL chunks."""

    workflow_id: str
    total_chunks: int
    text_chars: int
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    provider: str = ""
    cache_hit: bool = False
    finish_reason: str | None = None


@dataclass
class Progress:
    """Answer of the `progress` query."""

    stage: Stage = Stage.QUEUED
    chunks_saved: int = 0
    total_chunks: int = 0
    percent: float = 0.0
    error: str | None = None


# --- activity inputs and outputs -------------------------------------------------


@dataclass
class PromptToValidate:
    prompt: str
    max_chars: int = 32_000


@dataclass
class ValidatedPrompt:
    prompt_chars: int


@dataclass
class GenerationRequest:
    """What `generate_full_text` sends to the LLM."""

    workflow_id: str
    messages: list[Turn]
    model: str
    max_tokens: int
    temperature: float
    mode: GenerationMode = GenerationMode.RESTART


@dataclass
class GeneratedText:
    """The LLM's full answer: checkpoint 2, recorded once in the workflow history."""

    text: str
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    finish_reason: str | None = None
    """A `FinishReason` value (None in histories recorded before it was kept)."""
    mode: str | None = None
    """The generation mode the worker used (`resume`/`restart`), once decided."""


@dataclass
class ChunkToSave:
    workflow_id: str
    index: int
    text: str
    total_chunks: int


@dataclass
class SavedChunk:
    index: int
    worker: str
    attempt: int
    inserted: bool


@dataclass
class GenerationUpdate:
    """An upsert of the `generations` row; fields left `None` keep their stored value."""

    workflow_id: str
    stage: Stage
    conversation_id: str | None = None
    user_id: str | None = None
    prompt: str | None = None
    model: str | None = None
    provider: str | None = None
    total_chunks: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None
    cache_key: str | None = None
    cache_hit: bool | None = None
    cached_from: str | None = None
    saved_ms: int | None = None
    saved_usd: float | None = None
    generation_mode: str | None = None
    finish_reason: str | None = None
    error_type: str | None = None
    retry_of: str | None = None
    parent_id: str | None = None
    variant_of: str | None = None
    continues: str | None = None


@dataclass
class StopToKeep:
    """A chat cancelled while its answer was being written: keep what was shown."""

    workflow_id: str


@dataclass
class ShownAnswer:
    """The text a stopped chat's viewers had seen (its live preview up to the stop), and
    what the provider billed for it (estimated when it reported nothing)."""

    text: str
    usage: Usage = field(default_factory=Usage)
    model: str = ""


@dataclass
class AnswerLookup:
    """Ask the answer cache for `cache_key`: reuse a ready answer, or claim the key."""

    workflow_id: str
    cache_key: str
    chunk_target_chars: int = 120


@dataclass
class CacheOutcome:
    """A hit (the chat's chunks were copied from the cache) or a claim (go and generate)."""

    hit: bool
    total_chunks: int = 0
    text_chars: int = 0
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    cached_from: str | None = None
    saved_ms: int | None = None
    saved_usd: float | None = None
    generation_mode: str | None = None
    finish_reason: str | None = None


@dataclass
class AnswerToRemember:
    """Store the answer this chat checkpointed under `cache_key` (text read from its chunks)."""

    workflow_id: str
    cache_key: str
    ttl_s: int
    model: str
    usage: Usage
    generation_ms: int
    finish_reason: str | None = None


@dataclass
class CacheClaim:
    """A claim on `cache_key` held by `workflow_id`, to release when the chat fails."""

    workflow_id: str
    cache_key: str


@dataclass
class ReconcileRequest:
    """Which chats the reconciler checks: these ids, or (empty) every chat whose record
    says running and has not changed for `older_than_s` (at most `limit` of them, the
    longest unchanged first). Temporal decides; a chat that runs is left alone."""

    workflow_ids: list[str] = field(default_factory=list)
    older_than_s: float = 0.0
    limit: int = 500


@dataclass
class ReconcileReport:
    """What one reconcile pass found: chats checked, and those whose record it closed."""

    checked: int = 0
    repaired: list[str] = field(default_factory=list)
    claims_released: int = 0
    failed: list[str] = field(default_factory=list)
    """Chats that could not be checked this time (the next pass tries again)."""


@dataclass
class PurgeRequest:
    """One retention pass over /v1 responses: delete those past their expiry (and whose
    chat has finished), `batch` at a time, at most `limit` in this pass."""

    batch: int = 200
    limit: int = 10_000


@dataclass
class PurgeReport:
    deleted: int = 0
