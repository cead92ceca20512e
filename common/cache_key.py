"""The answer-cache key: a hash of everything that determines an answer.

Pure and deterministic (safe in workflow code): the same conversation sent to the
same provider and model with the same generation parameters gives the same key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from common.models import Turn


def answer_cache_key(
    messages: Sequence[Turn], provider: str, model: str, max_tokens: int, temperature: float
) -> str:
    """sha256 over a canonical JSON of the messages (system prompt, earlier turns and the
    prompt), the provider, the model and the generation parameters."""
    canonical = json.dumps(
        {
            "messages": [[m.role, m.content] for m in messages],
            "provider": provider,
            "model": model,
            "max_tokens": max_tokens,
            "temperature": round(float(temperature), 6),
        },
        ensure_ascii=False,
        separators=(",", ":"),
        sort_keys=True,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
