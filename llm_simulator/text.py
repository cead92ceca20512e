"""Deterministic pseudo-English completions with a natural end.

Everything here is pure: no clock, no global random state, no I/O. The same inputs always give
the same tokens, which lets tests compute the expected answer of any request
(:func:`simulated_tokens`, or :func:`simulated_reply` for the finish reason too). Like a real
model, a reply has a natural length of its own; a request's token limit only cuts it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

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

#: Bounds of the length of a natural reply, in tokens (the marker included).
NATURAL_MIN_TOKENS = 48
NATURAL_MAX_TOKENS = 1024

# Natural replies kept in memory: a generation and its retries ask for the same one.
_CACHED_REPLIES = 512
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
    messages: Sequence[Mapping[str, Any]], model: str, temperature: float, variant: str = ""
) -> int:
    """Seed derived from a canonical JSON encoding of the inputs (stable across processes)."""
    inputs: dict[str, Any] = {
        "messages": list(messages),
        "model": model,
        "temperature": float(temperature),
    }
    if variant:
        inputs["variant"] = variant
    payload = json.dumps(
        inputs,
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


@functools.lru_cache(maxsize=_CACHED_REPLIES)
def _natural_reply(seed: int) -> tuple[str, ...]:
    """The whole natural reply drawn from ``seed``: marker, then sentences up to its length."""
    rng = random.Random(seed)
    target = rng.randint(NATURAL_MIN_TOKENS, NATURAL_MAX_TOKENS)
    tokens = [word if index == 0 else " " + word for index, word in enumerate(MARKER_WORDS)]
    separator = _PARAGRAPH_BREAK
    while True:
        sentence = _sentence(rng)
        if len(tokens) >= NATURAL_MIN_TOKENS and len(tokens) + len(sentence) > target:
            return tuple(tokens)
        tokens.extend(
            (separator if index == 0 else " ") + word for index, word in enumerate(sentence)
        )
        separator = _PARAGRAPH_BREAK if rng.random() < _PARAGRAPH_PROBABILITY else " "


#: ``POST /sim/variant {"variant": "echo"}``: the reply repeats the last user message after
#: the marker, word for word, as a model told "repeat after me" (or prompt-injected by a
#: document) would. For tests of what a client does with hostile model output (markdown
#: images, HTML); its length is the message's, outside the natural-length contract.
ECHO_VARIANT = "echo"


def _echo_reply(messages: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    users = [m for m in messages if m.get("role") == "user"]
    content = users[-1].get("content", "") if users else ""
    if isinstance(content, list):
        content = "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    tokens = [word if index == 0 else " " + word for index, word in enumerate(MARKER_WORDS)]
    words = re.findall(r"\s*\S+", str(content))
    for index, word in enumerate(words):
        tokens.append((_PARAGRAPH_BREAK + word.lstrip()) if index == 0 else word)
    return tuple(tokens)


FinishReason = Literal["stop", "length"]


@dataclass(frozen=True, slots=True)
class SimulatedReply:
    """What a request produces: its tokens and why they end.

    ``tokens`` is the first ``min(natural_tokens, max_tokens)`` tokens of the natural reply;
    ``finish_reason`` is ``"stop"`` when the reply ended on its own (the limit did not cut
    it) and ``"length"`` when it was cut at ``max_tokens``; ``natural_tokens`` is the length
    of the natural reply, whatever the limit.
    """

    tokens: tuple[str, ...]
    finish_reason: FinishReason
    natural_tokens: int


def simulated_reply(
    messages: Sequence[Mapping[str, Any]],
    model: str,
    max_tokens: int,
    temperature: float,
    variant: str = "",
) -> SimulatedReply:
    """The simulated reply to a request: the natural reply, cut at ``max_tokens``.

    Contract:

    * The natural reply depends on ``messages``, ``model`` and ``temperature`` only (compared
      through their canonical JSON): equal inputs give equal replies, any change gives (almost
      surely) another one. A non-empty ``variant`` (``POST /sim/variant``) gives another
      reply to the same inputs, as a real model sampling at a temperature above 0 would.
      ``max_tokens`` only cuts it, so the reply with limit ``N`` is the
      first ``N`` tokens of the reply with any larger limit.
    * The natural reply has between :data:`NATURAL_MIN_TOKENS` and :data:`NATURAL_MAX_TOKENS`
      tokens (its length is drawn from the same seed) and ends at the end of a sentence.
    * Each token is one word carrying its leading separator (a space, or ``"\\n\\n"`` at a
      paragraph break), except the very first token, so ``"".join(tokens)`` is the text.
    * The reply starts with :data:`MARKER` (truncated if the limit is smaller than the marker),
      followed by a paragraph break and pseudo-English sentences that start with a capital
      letter and end with ``"."``. A reply cut at the limit may end mid-sentence.

    Raises ``ValueError`` if ``max_tokens`` is negative.
    """
    if max_tokens < 0:
        raise ValueError("max_tokens must be >= 0")
    if variant == ECHO_VARIANT:
        natural = _echo_reply(messages)
    else:
        natural = _natural_reply(_canonical_seed(messages, model, temperature, variant))
    if max_tokens >= len(natural):
        return SimulatedReply(natural, "stop", len(natural))
    return SimulatedReply(natural[:max_tokens], "length", len(natural))


def simulated_tokens(
    messages: Sequence[Mapping[str, Any]], model: str, max_tokens: int, temperature: float
) -> list[str]:
    """The tokens a request produces: ``list(simulated_reply(...).tokens)``.

    That is ``min(natural length, max_tokens)`` tokens; see :func:`simulated_reply` for the
    contract. Raises ``ValueError`` if ``max_tokens`` is negative.
    """
    return list(simulated_reply(messages, model, max_tokens, temperature).tokens)


_WORD = re.compile(r"\S+")


def count_tokens(text: str) -> int:
    """Rough token count of ``text``: the number of whitespace-separated words."""
    return len(_WORD.findall(text))
