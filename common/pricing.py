"""Estimated cost of a generation from its token usage and a per-model price table."""

from __future__ import annotations

from pydantic import BaseModel, Field

from common.models import Usage


class ModelPrice(BaseModel):
    """US dollars per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)


# Public list prices (USD per 1M tokens) of a few common models; override or extend with
# LLM_PRICES='{"my-model": {"input": 1.0, "output": 2.0}}'. The simulator is priced like
# gpt-4o-mini so that the cost and savings figures of a local run look like real ones.
DEFAULT_PRICES: dict[str, ModelPrice] = {
    "gpt-4o-mini": ModelPrice(input=0.15, output=0.60),
    "gpt-4o": ModelPrice(input=2.50, output=10.00),
    "gpt-4.1-mini": ModelPrice(input=0.40, output=1.60),
    "gpt-4.1": ModelPrice(input=2.00, output=8.00),
    "simulator": ModelPrice(input=0.15, output=0.60),
}


def estimate_cost_usd(model: str, usage: Usage, prices: dict[str, ModelPrice]) -> float | None:
    """Cost of `usage` on `model`, or None when the model has no price (shown as unknown)."""
    price = prices.get(model) or prices.get(model.split(":", 1)[0])
    if price is None:
        return None
    return round(
        (usage.prompt_tokens * price.input + usage.completion_tokens * price.output) / 1_000_000,
        8,
    )
