"""How much of a conversation goes into a chat's workflow input.

The earlier turns travel in `ChatRequest.history`, so they are part of the workflow
input payload (Temporal refuses one above 2 MiB) and of every workflow task. The
gateway keeps only the most recent turns that fit in `HISTORY_MAX_CHARS`.
"""

from __future__ import annotations

from collections.abc import Sequence

from common.models import Turn


def recent_turns(turns: Sequence[Turn], max_chars: int) -> tuple[list[Turn], int]:
    """The most recent turns whose contents total at most `max_chars` characters, and
    how many turns were dropped.

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
        exchange_chars += len(turns[index].content)
        if turns[index].role != "user" and index > 0:
            continue
        if used + exchange_chars > max_chars:
            break
        used += exchange_chars
        exchange_chars = 0
        start = index
    return list(turns[start:]), start
