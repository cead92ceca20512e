"""One typed settings object for every durable-chat process.

Values come from environment variables (case-insensitive) or a `.env` file in
the working directory. Defaults run the whole stack on one machine; every port
can be moved with its variable. Secrets are `SecretStr` so they never appear in
a log line or a repr.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from temporalio.converter import DataConverter

from common.codec import EncryptionCodec, data_converter, parse_keys
from common.models import GenerationMode, Usage
from common.pricing import DEFAULT_PRICES, ModelPrice, estimate_cost_usd

TASK_QUEUE = "chat-queue"


class Settings(BaseSettings):
    """Configuration read from the environment; see the README's table."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # Temporal
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    task_queue: str = TASK_QUEUE
    temporal_ui_url: str = "http://localhost:8233"

    # PostgreSQL
    database_url: str = "postgresql://postgres@127.0.0.1:5433/durable_chat"

    # LLM provider: a real OpenAI-compatible one when a key is set, else the simulator.
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    llm_model: str = "gpt-4o-mini"
    # The models a request may name (comma-separated); empty: the configured model
    # (LLM_MODEL with a provider, `simulator` without one). Every one must have a price.
    allowed_models: str = ""
    simulator_url: str = "http://127.0.0.1:8300/v1"
    # auto: each worker probes its endpoint at start (a background response, then a
    # retrieve by id) and uses resume where that works, restart where it does not
    # (llama.cpp, Ollama, vLLM without a response store). resume: required; a worker
    # whose endpoint cannot resume refuses to start. restart: always chat completions.
    generation_mode: Literal["auto", "resume", "restart"] = "auto"
    llm_request_timeout_s: float = Field(default=120.0, gt=0)
    # No event from the provider for this long while a generation streams: the attempt
    # is treated as a broken stream (re-attached in resume mode, retried in restart mode).
    llm_stream_idle_timeout_s: float = Field(default=30.0, gt=0)
    # A background response still `queued` after this long is cancelled at the provider
    # and the chat fails with a clear message (nothing was generated, nothing billed).
    llm_queued_timeout_s: float = Field(default=120.0, gt=0)
    # How long provider trouble (5xx, 429, refused connections, idle streams) is retried
    # before the chat fails as "provider unavailable" (the user can retry it in one click).
    llm_outage_tolerance_s: float = Field(default=300.0, ge=0)

    # Encrypted Temporal payloads (common/codec.py, docs/security.md): `id:base64key`
    # pairs (AES-256, 32 bytes each); the active key encrypts, every listed key decrypts.
    # Unset: payloads are stored in clear. `make up` generates one.
    payload_encryption_keys: SecretStr | None = None
    payload_encryption_key_id: str | None = None
    """The active key's id (default: the first listed)."""
    # With encryption on, summaries in the Temporal UI name the model only; true: they
    # start with the prompt's first words, as without encryption (encrypted too).
    summary_shows_prompt: bool = False
    # Who may use the codec endpoint (/codec/decode, /codec/encode: readable histories
    # in the Temporal UI and CLI): these API_KEYS users (comma-separated), and browsers
    # on these origins (the Temporal UI's, which has no login of its own under make up).
    operator_users: str = ""
    # The UI acting for its users (ui/assertions.py): API_KEYS users whose key may
    # present a user assertion, and the secret the UI signs them with (unset: no
    # assertion is accepted, every UI user is the UI's own user).
    ui_service_users: str = "chainlit"
    user_assertion_secret: SecretStr | None = None
    codec_trusted_origins: str = ""

    # Answer cache and cost accounting
    cache_enabled: bool = True
    # global: an identical request of any user is answered from the cache (cheapest; a
    # user can tell from a hit's speed that someone asked the same); user: entries are
    # per user (docs/security.md). Read by the workers.
    cache_scope: Literal["global", "user"] = "global"
    cache_ttl_s: int = Field(default=3600, ge=1)
    llm_prices: dict[str, ModelPrice] = Field(default_factory=lambda: dict(DEFAULT_PRICES))

    # Answers
    default_max_tokens: int = Field(default=512, ge=1)
    max_tokens_limit: int = Field(default=8192, ge=1)
    max_prompt_chars: int = Field(default=32_000, ge=1)
    # Characters of earlier conversation turns put into a chat's workflow input (the most
    # recent whole exchanges that fit, each turn charged its content plus
    # common.history.TURN_OVERHEAD_CHARS): keeps the input below Temporal's 2 MiB payload
    # limit however long the conversation (docs/capacity.md). 100,000 so that one maximal
    # exchange (a MAX_PROMPT_CHARS prompt and a ~55,000-character MAX_TOKENS_LIMIT answer,
    # ~87,000) still fits: a smaller cap would send no history at all after one. 0: none.
    history_max_chars: int = Field(default=100_000, ge=0)
    # /v1 (OpenAI-compatible API): a stored response (store=true) is kept this long,
    # then deleted by the retention sweep (OpenAI keeps them 30 days); one created with
    # store=false is deleted by the first sweep after it finished. The sweep runs every
    # RESPONSES_SWEEP_INTERVAL_S (a Temporal Schedule; 0 turns it off).
    responses_retention_days: float = Field(default=90.0, gt=0)
    responses_sweep_interval_s: float = Field(default=300.0, ge=0)
    # Characters per checkpointed chunk (one save_chunk activity each). Each chunk costs
    # about 7 ms of Temporal server CPU and a workflow task whatever its size, and the
    # live text reaches viewers as deltas anyway: 480 (a short paragraph) rather than
    # 120 took 100 concurrent chats from 24 to 18 s to all-durable (bench.load).
    chunk_target_chars: int = Field(default=480, ge=32)
    # save_chunk activities in flight per chat: bounded so a long answer does not flood
    # the task queue, above 1 so checkpointing does not pay one round trip per chunk.
    checkpoint_window: int = Field(default=16, ge=1, le=256)

    # Gateway access: API_KEYS="alice:<key>,bob:<key>" (make up generates them).
    auth_enabled: bool = True
    api_keys: SecretStr | None = None
    rate_limit_per_minute: int = Field(default=60, ge=1)  # chat starts per user
    max_concurrent_chats: int = Field(default=10, ge=1)  # running chats per user
    # (counted in Temporal's visibility: workflows with the user's ChatUserId that run)

    # Every chat's workflow execution timeout: a chat still running after this long is
    # stopped by Temporal (and its record closed as timed_out). 0: no timeout.
    chat_timeout_s: float = Field(default=3600.0, ge=0)
    # The reconcile Schedule's interval (workers create it); 0: no schedule.
    reconcile_interval_s: float = Field(default=60.0, ge=0)

    # Gateway
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8000
    status_query_timeout_s: float = 1.0

    # Worker: Prometheus metrics (Temporal SDK + ours) on this port; 0 turns them off.
    # Under `make up` worker N listens on WORKER_METRICS_PORT + N - 1.
    worker_metrics_port: int = Field(default=9464, ge=0, le=65535)
    # The interface it binds (a container sets 0.0.0.0 for its scraper).
    worker_metrics_host: str = "127.0.0.1"
    # Set: the gateway's /metrics needs `Authorization: Bearer <METRICS_API_KEY>`.
    metrics_api_key: SecretStr | None = None
    worker_max_concurrent_activities: int = 200
    worker_max_concurrent_workflow_tasks: int = 100

    # Local stack (`make up`)
    data_dir: Path = Path(".data")

    @field_validator(
        "openai_api_key",
        "openai_base_url",
        "api_keys",
        "payload_encryption_keys",
        "payload_encryption_key_id",
        "metrics_api_key",
        "user_assertion_secret",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def uses_simulator(self) -> bool:
        """True when no provider key is configured: answers come from the simulator."""
        return self.openai_api_key is None

    @property
    def provider_name(self) -> str:
        """A short provider label stored with each generation."""
        if self.uses_simulator:
            return "simulator"
        return "openai-compatible" if self.openai_base_url else "openai"

    @property
    def requested_generation_mode(self) -> GenerationMode:
        """What the gateway asks of a chat; `auto` is settled by the worker's probe."""
        return GenerationMode(self.generation_mode)

    @property
    def llm_base_url(self) -> str | None:
        """The endpoint the workers call (None: OpenAI's own)."""
        return self.simulator_url if self.uses_simulator else self.openai_base_url

    @property
    def effective_model(self) -> str:
        """The model name sent to the provider when a request names none."""
        return "simulator" if self.uses_simulator else self.llm_model

    def payload_codec(self) -> EncryptionCodec | None:
        """The codec of every Temporal client of this process (None: encryption off)."""
        if self.payload_encryption_keys is None:
            return None
        keys = parse_keys(self.payload_encryption_keys.get_secret_value())
        if not keys:
            return None
        return EncryptionCodec(keys, self.payload_encryption_key_id or next(iter(keys)))

    @property
    def ui_service_user_set(self) -> frozenset[str]:
        return frozenset(u.strip() for u in self.ui_service_users.split(",") if u.strip())

    @property
    def operators(self) -> frozenset[str]:
        return frozenset(u.strip() for u in self.operator_users.split(",") if u.strip())

    @property
    def codec_origins(self) -> frozenset[str]:
        origins = (o.strip().rstrip("/") for o in self.codec_trusted_origins.split(","))
        return frozenset(o for o in origins if o)

    def temporal_data_converter(self) -> DataConverter:
        return data_converter(self.payload_codec())

    @property
    def model_allowlist(self) -> list[str]:
        """ALLOWED_MODELS, or the configured model; the default model always first."""
        named = [m.strip() for m in self.allowed_models.split(",") if m.strip()]
        return list(dict.fromkeys(named or [self.effective_model]))

    @property
    def prices(self) -> dict[str, ModelPrice]:
        """The price table: the built-in one, overridden and extended by LLM_PRICES."""
        return {**DEFAULT_PRICES, **self.llm_prices}

    def check_models(self) -> None:
        """Refuse to start when an allowed model has no price (its cost could not be
        counted) or the default model is not allowed."""
        unpriced = [
            m for m in self.model_allowlist if estimate_cost_usd(m, Usage(), self.prices) is None
        ]
        if unpriced:
            raise ValueError(
                f"ALLOWED_MODELS has models without a price: {', '.join(unpriced)}. Add them "
                'to LLM_PRICES (\'{"model": {"input": usd_per_1M, "output": usd_per_1M}}\') '
                "or remove them from ALLOWED_MODELS."
            )
        if self.effective_model not in self.model_allowlist:
            raise ValueError(
                f"The default model {self.effective_model!r} is not in ALLOWED_MODELS "
                f"({self.allowed_models}): requests that name no model would be refused."
            )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
