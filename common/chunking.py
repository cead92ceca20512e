"""Deterministic text chunking: the same text always gives the same chunks."""

from __future__ import annotations

import re

# End of a sentence: terminal punctuation, optional closing quotes or brackets, then space.
_SENTENCE_END = re.compile(r"""[.!?…]["')\]]*\s+|\n+""")
_WORD_END = re.compile(r"\s+")


def split_into_chunks(text: str, target_chars: int) -> list[str]:
    """Split `text` into chunks of about `target_chars` characters.

    Contract:
    - `"".join(chunks) == text` (nothing lost, nothing added, whitespace kept);
    - cuts fall after a sentence end when one lies between half and one and a half
      times the target, else after a word, else (one very long word) at the target;
    - the result depends only on the arguments (safe in workflow code).
    """
    if target_chars < 1:
        raise ValueError("target_chars must be positive")
    chunks: list[str] = []
    start = 0
    low = max(1, target_chars // 2)
    high = max(target_chars, target_chars * 3 // 2)
    while start < len(text):
        if len(text) - start <= high:
            chunks.append(text[start:])
            break
        window = text[start : start + high]
        cut = _last_match_end(_SENTENCE_END, window, low) or _last_match_end(_WORD_END, window, low)
        if cut is None:
            cut = target_chars
        chunks.append(text[start : start + cut])
        start += cut
    return chunks


def _last_match_end(pattern: re.Pattern[str], window: str, low: int) -> int | None:
    """End offset of the last match of `pattern` in `window` ending at or after `low`."""
    best: int | None = None
    for match in pattern.finditer(window):
        if match.end() >= low:
            best = match.end()
    return best
