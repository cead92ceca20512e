"""The OpenAI-compatible client every worker uses, and what its endpoint can do."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import openai

from common.models import GenerationMode
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


@dataclass(frozen=True)
class ModeDecision:
    """The generation mode a worker uses, and why (logged at start)."""

    mode: GenerationMode
    reason: str
    probed: bool = True


PROBE_PROMPT = "durable-chat capability probe: answer with one word."


async def probe_resumable(client: openai.AsyncOpenAI, model: str) -> tuple[bool, str]:
    """Can this endpoint resume a generation? One tiny background response is created,
    retrieved by id and cancelled: resumable only if the response was really kept in the
    background (`background: true`, still retrievable). Raises on connection trouble."""
    try:
        response = await client.responses.create(
            model=model,
            input=PROBE_PROMPT,
            max_output_tokens=16,
            background=True,
            store=True,
        )
    except openai.APIStatusError as err:
        return False, f"POST /responses with background=true answered {err.status_code}"
    if getattr(response, "background", None) is not True:
        return False, "the endpoint ignores background=true (it answered a finished response)"
    try:
        await client.responses.retrieve(response.id)
    except openai.APIStatusError as err:
        return False, f"a background response cannot be retrieved by id ({err.status_code})"
    finally:
        with contextlib.suppress(openai.APIError):
            await client.responses.cancel(response.id)
    return True, "background responses are kept and can be retrieved by id"


async def decide_generation_mode(
    settings: Settings, client: openai.AsyncOpenAI, wait_s: float = 30.0
) -> ModeDecision:
    """Settle GENERATION_MODE for this worker.

    `restart` is taken as it is. `auto` and `resume` probe the endpoint (retrying for
    `wait_s` while it is unreachable, as when the whole stack starts at once): `auto`
    falls back to restart when it cannot resume (or cannot be reached), `resume` raises
    `ResumeUnsupportedError` when the endpoint answers that it cannot.
    """
    if settings.generation_mode == "restart":
        return ModeDecision(GenerationMode.RESTART, "GENERATION_MODE=restart", probed=False)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            resumable, reason = await probe_resumable(client, settings.effective_model)
            break
        except (openai.APIConnectionError, openai.InternalServerError) as err:
            if time.monotonic() >= deadline:
                if settings.generation_mode == "resume":
                    return ModeDecision(
                        GenerationMode.RESUME,
                        f"GENERATION_MODE=resume; the endpoint could not be probed ({err})",
                        probed=False,
                    )
                return ModeDecision(
                    GenerationMode.RESTART,
                    f"the endpoint could not be probed ({err}); restart works everywhere",
                    probed=False,
                )
            await asyncio.sleep(1.0)
    if resumable:
        return ModeDecision(GenerationMode.RESUME, reason)
    if settings.generation_mode == "resume":
        raise ResumeUnsupportedError(
            f"GENERATION_MODE=resume, but {settings.llm_base_url or 'the provider'} cannot "
            f"resume a generation: {reason}. Use GENERATION_MODE=auto or restart."
        )
    return ModeDecision(GenerationMode.RESTART, f"{reason}; falling back to restart")


class ResumeUnsupportedError(RuntimeError):
    """GENERATION_MODE=resume against an endpoint that cannot resume a generation."""
