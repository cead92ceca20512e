"""The OpenAI-compatible client every worker uses, built from settings."""

from __future__ import annotations

import openai

from common.settings import Settings


def build_llm_client(settings: Settings) -> openai.AsyncOpenAI:
    """A client for the real provider when `OPENAI_API_KEY` is set, else for the simulator.

    `max_retries=0`: Temporal owns retries (see `workflows.policies`).
    """
    if settings.openai_api_key is None:
        return openai.AsyncOpenAI(
            api_key="simulator",
            base_url=settings.simulator_url,
            max_retries=0,
            timeout=settings.llm_request_timeout_s,
        )
    return openai.AsyncOpenAI(
        api_key=settings.openai_api_key.get_secret_value(),
        base_url=settings.openai_base_url,
        max_retries=0,
        timeout=settings.llm_request_timeout_s,
    )
