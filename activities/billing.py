"""What a chat's LLM calls cost: one `llm_calls` row per generation the provider ran.

The final answer's usage is in the workflow history; this ledger also counts what the
provider billed for generations that did not become the answer (a restart after a dead
worker, a fresh generation after `response.failed`). Writes are best effort: a
database hiccup never fails the generation, it only leaves a row to be closed later.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass

import asyncpg
import structlog

from common.models import Turn, Usage
from common.pricing import ModelPrice, estimate_cost_usd
from storage import LlmCallStore

log = structlog.get_logger(__name__)

_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)

# Rule of thumb for English text with OpenAI's tokenizers, used only when a provider
# reports no usage (or a call was cut off before it could): about 4 characters a token.
CHARS_PER_TOKEN = 4


def estimate_tokens(chars: int) -> int:
    return 0 if chars <= 0 else max(1, round(chars / CHARS_PER_TOKEN))


def estimate_prompt_tokens(messages: list[Turn]) -> int:
    return estimate_tokens(sum(len(t.content) for t in messages))


@dataclass
class CallLedger:
    """The `llm_calls` rows one attempt of generate_full_text writes."""

    calls: LlmCallStore
    prices: dict[str, ModelPrice]
    workflow_id: str
    attempt: int
    mode: str
    model: str
    prompt_estimate: int
    run_id: str = ""

    async def begin(self, call_key: str) -> None:
        """The provider accepted a generation: count it (once per key)."""
        await self._safely(
            self.calls.begin(
                self.workflow_id,
                call_key,
                self.attempt,
                self.mode,
                self.model,
                self.prompt_estimate,
                self.run_id,
            )
        )

    async def finish(
        self,
        call_key: str,
        status: str,
        *,
        usage: Usage | None,
        chars: int,
        model: str | None = None,
        finish_reason: str | None = None,
        error: str | None = None,
    ) -> None:
        """Close a generation with the provider's usage, or an estimate from `chars`."""
        if usage is None or (usage.prompt_tokens == 0 and usage.completion_tokens == 0):
            usage = Usage(self.prompt_estimate, estimate_tokens(chars), estimated=True)
        model = model or self.model
        await self._safely(
            self.calls.finish(
                self.workflow_id,
                call_key,
                status=status,
                model=model,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                estimated=usage.estimated,
                cost_usd=estimate_cost_usd(model, usage, self.prices),
                finish_reason=finish_reason,
                error=None if error is None else error[:500],
            )
        )

    async def close_interrupted(
        self,
        except_key: str | None,
        error: str = "the worker running this generation stopped before it ended",
    ) -> int:
        """Close the calls of earlier attempts whose worker died mid-generation: their
        tokens are estimated from the text their live preview had reached. Returns how
        many were closed."""
        try:
            open_calls = await self.calls.open_calls(self.workflow_id, except_key)
        except _DB_ERRORS as err:
            log.warning("cannot read earlier LLM calls", error=str(err))
            return 0
        for call in open_calls:
            usage = Usage(
                call.prompt_tokens or self.prompt_estimate,
                estimate_tokens(call.chars_seen),
                estimated=True,
            )
            await self.finish(
                call.call_key,
                "interrupted",
                usage=usage,
                chars=call.chars_seen,
                model=call.model,
                error=error,
            )
        return len(open_calls)

    async def _safely(self, write: Awaitable[None]) -> None:
        try:
            await write
        except _DB_ERRORS as err:
            log.warning("LLM call not recorded", error=str(err))
