"""validate_prompt: refuse prompts that cannot be answered, with a message for people."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from common.errors import InvalidPromptError
from common.models import PromptToValidate, ValidatedPrompt
from common.prompts import check_prompt


@activity.defn(name="validate_prompt")
async def validate_prompt(request: PromptToValidate) -> ValidatedPrompt:
    """Checkpoint 1. Deterministic and side-effect free, hence trivially idempotent.

    An invalid prompt raises a non-retryable `ApplicationError` of type
    `InvalidPromptError`, so the chat fails at once without calling the LLM.
    """
    try:
        check_prompt(request.prompt, request.max_chars)
    except InvalidPromptError as err:
        raise ApplicationError(str(err), type="InvalidPromptError", non_retryable=True) from err
    return ValidatedPrompt(prompt_chars=len(request.prompt))
