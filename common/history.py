"""How much of a conversation goes into a chat's workflow input.

The earlier turns travel in `ChatRequest.history`, so they are part of the workflow
input payload (Temporal refuses one above 2 MiB) and of every workflow task. The
gateway keeps only the most recent turns that fit in `HISTORY_MAX_CHARS`.
"""

from __future__ import annotations

from collections.abc import Sequence

from common.models import Turn

# What a turn costs in the serialised history besides its content, charged so that many
# tiny turns cannot exceed the bound: with the SDK's JSON converter
# `{"content":"","role":"assistant"}` is 33 bytes, plus 1 for the comma between list
# items (a user turn is 5 less). Measured with `temporalio.converter.default()`.
TURN_OVERHEAD_CHARS = 34


def recent_turns(turns: Sequence[Turn], max_chars: int) -> tuple[list[Turn], int]:
    """The most recent turns that fit in `max_chars`, and how many turns were dropped.

    Each turn is charged `len(content) + TURN_OVERHEAD_CHARS`, so the kept turns
    serialise to at most `max_chars` bytes of JSON when every character is ASCII that
    the converter does not escape; characters it escapes cost more per character (see
    docs/capacity.md), at most 12 bytes (an emoji), so the bound is 12 * `max_chars`.

    `turns` is oldest first, as `ChatStore.conversation_turns` returns them: each user
    turn followed by its answer. Whole exchanges (a user turn and the turns after it up
    to the next user turn) are dropped from the oldest end, so an answer is never kept
    without its question; the kept turns are a contiguous suffix, so the newest exchange
    that does not fit on its own drops everything. `max_chars` 0 keeps nothing.
    """
    if max_chars <= 0:
        return [], len(turns)
    start = len(turns)  # turns[start:] is what fits so far
    used = 0
    exchange_chars = 0
    for index in range(len(turns) - 1, -1, -1):
        exchange_chars += len(turns[index].content) + TURN_OVERHEAD_CHARS
        if turns[index].role != "user" and index > 0:
            continue
        if used + exchange_chars > max_chars:
            break
        used += exchange_chars
        exchange_chars = 0
        start = index
    return list(turns[start:]), start
