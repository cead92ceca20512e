"""validate_prompt: refuse prompts that cannot be answered, with a message for people."""

from __future__ import annotations

import unicodedata

from temporalio import activity
from temporalio.exceptions import ApplicationError

from common.errors import InvalidPromptError
from common.models import PromptToValidate, ValidatedPrompt

_ALLOWED_CONTROLS = {"\n", "\r", "\t"}


def check_prompt(prompt: str, max_chars: int) -> None:
    """Raise `InvalidPromptError` when `prompt` is empty, too long or holds control characters.

    Pure and cheap: the gateway calls it too, to answer 422/413 at once.
    """
    if not prompt.strip():
        raise InvalidPromptError("The prompt is empty: write a question or an instruction.")
    if len(prompt) > max_chars:
        raise InvalidPromptError(
            f"The prompt is {len(prompt):,} characters long; the limit is {max_chars:,}."
        )
    for position, char in enumerate(prompt):
        if char in _ALLOWED_CONTROLS:
            continue
        category = unicodedata.category(char)
        if category in ("Cc", "Cs") or char in ("\u2028", "\u2029"):
            raise InvalidPromptError(
                f"The prompt contains a control character (U+{ord(char):04X}) at position "
                f"{position}; remove it and send again."
            )


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
