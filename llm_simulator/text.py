"""Deterministic pseudo-English completions.

Everything here is pure: no clock, no global random state, no I/O. The same inputs always give
the same tokens, which lets tests compute the expected answer of any request.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

#: Words of the marker every simulated reply starts with (one token each).
MARKER_WORDS: tuple[str, ...] = (
    "[Simulated",
    "reply",
    "from",
    "the",
    "durable-chat",
    "LLM",
    "simulator]",
)
#: The marker as it appears at the start of every reply with at least ``len(MARKER_WORDS)`` tokens.
MARKER: str = " ".join(MARKER_WORDS)

_PARAGRAPH_BREAK = "\n\n"
_PARAGRAPH_PROBABILITY = 0.25
_SENTENCE_WORDS = (6, 16)

_OPENERS: tuple[str, ...] = (
    "the", "a", "every", "this", "our", "each", "another", "some", "that", "one",
)  # fmt: skip
_NOUNS: tuple[str, ...] = (
    "worker", "workflow", "answer", "question", "system", "message", "stream", "token",
    "database", "server", "history", "conversation", "browser", "signal", "activity",
    "queue", "engineer", "model", "request", "reply", "timer", "record", "network", "user",
    "process", "result", "design", "idea", "river", "garden", "library", "journey",
)  # fmt: skip
_ADJECTIVES: tuple[str, ...] = (
    "durable", "quiet", "careful", "quick", "patient", "simple", "reliable", "bright",
    "steady", "gentle", "small", "large", "curious", "honest", "modern", "old", "clear",
)  # fmt: skip
_VERBS: tuple[str, ...] = (
    "remembers", "explains", "delivers", "carries", "survives", "follows", "builds",
    "answers", "writes", "keeps", "finds", "shows", "repeats", "checks", "sends", "waits for",
    "describes", "protects", "restores", "measures",
)  # fmt: skip
_ADVERBS: tuple[str, ...] = (
    "slowly", "quietly", "always", "often", "carefully", "again", "eventually", "gladly",
)  # fmt: skip
_PREPOSITIONS: tuple[str, ...] = (
    "with", "after", "before", "behind", "across", "under", "beyond", "without", "near",
)  # fmt: skip
_CONNECTORS: tuple[str, ...] = ("and", "while", "because", "so", "but", "although")


def _canonical_seed(
    messages: Sequence[Mapping[str, Any]], model: str, max_tokens: int, temperature: float
) -> int:
    """Seed derived from a canonical JSON encoding of the inputs (stable across processes)."""
    payload = json.dumps(
        {
            "messages": list(messages),
            "model": model,
            "max_tokens": max_tokens,
            "temperature": float(temperature),
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    digest = hashlib.sha256(payload.encode("utf-8")).digest()
    return int.from_bytes(digest[:16], "big")


def _noun_phrase(rng: random.Random) -> list[str]:
    words = [rng.choice(_OPENERS)]
    if rng.random() < 0.5:
        words.append(rng.choice(_ADJECTIVES))
    words.append(rng.choice(_NOUNS))
    if words[0] == "a" and words[1][0] in "aeiou":
        words[0] = "an"
    return words


def _clause(rng: random.Random) -> list[str]:
    words = _noun_phrase(rng)
    if rng.random() < 0.3:
        words.append(rng.choice(_ADVERBS))
    words.extend(rng.choice(_VERBS).split())
    words.extend(_noun_phrase(rng))
    if rng.random() < 0.4:
        words.append(rng.choice(_PREPOSITIONS))
        words.extend(_noun_phrase(rng))
    return words


def _sentence(rng: random.Random) -> list[str]:
    """Words of one sentence: capitalised first word, '.' after the last word."""
    low, high = _SENTENCE_WORDS
    target = rng.randint(low, high)
    words = _clause(rng)
    while len(words) < target:
        words[-1] += ","
        words.append(rng.choice(_CONNECTORS))
        words.extend(_clause(rng))
    words[0] = words[0][:1].upper() + words[0][1:]
    words[-1] = words[-1].rstrip(",") + "."
    return words


def simulated_tokens(
    messages: Sequence[Mapping[str, Any]], model: str, max_tokens: int, temperature: float
) -> list[str]:
    """Return the simulated completion for a request, as a list of exactly ``max_tokens`` tokens.

    Contract:

    * Deterministic: equal inputs (compared through their canonical JSON) give equal tokens;
      any change of messages, model, max_tokens or temperature gives (almost surely) other text.
    * Each token is one word carrying its leading separator (a space, or ``"\\n\\n"`` at a
      paragraph break), except the very first token, so ``"".join(tokens)`` is the reply text.
    * The reply starts with :data:`MARKER` (truncated if ``max_tokens`` is smaller than the
      marker), followed by a paragraph break and pseudo-English sentences that start with a
      capital letter and end with ``"."``. The text is cut at ``max_tokens`` even mid-sentence.

    Raises ``ValueError`` if ``max_tokens`` is negative.
    """
    if max_tokens < 0:
        raise ValueError("max_tokens must be >= 0")
    rng = random.Random(_canonical_seed(messages, model, max_tokens, temperature))
    tokens = [word if index == 0 else " " + word for index, word in enumerate(MARKER_WORDS)]
    separator = _PARAGRAPH_BREAK
    while len(tokens) < max_tokens:
        for index, word in enumerate(_sentence(rng)):
            tokens.append((separator if index == 0 else " ") + word)
        separator = _PARAGRAPH_BREAK if rng.random() < _PARAGRAPH_PROBABILITY else " "
    return tokens[:max_tokens]


_WORD = re.compile(r"\S+")


def count_tokens(text: str) -> int:
    """Rough token count of ``text``: the number of whitespace-separated words."""
    return len(_WORD.findall(text))
