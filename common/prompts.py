"""The prompt rules: what the gateway refuses at once (422/413) and validate_prompt
refuses in the workflow, in one place both import."""

from __future__ import annotations

import unicodedata

from common.errors import InvalidPromptError

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
