"""The live preview of an answer, as every viewer builds it from the chat's event log.

A stopped answer keeps exactly what its viewers had seen: this is that text. The rules
are those of the UI's ``LiveAnswer`` (ui/live_answer.py, which imports nothing of ours
and so keeps its own copy) and of the gateway's stream, in the order of the log:
- ``delta`` events place text at their offset; an attempt older than the newest seen
  is ignored (a late write of an attempt that was taken over);
- a ``reset`` drops the preview (the LLM call started over), one with ``"scope":
  "run"`` (an operator's reset in Temporal) also forgets an earlier stop;
- ``stopping``, appended by the gateway when someone asks to stop the chat, freezes the
  preview: the text streamed after it reached no one and is not kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

STOPPING_EVENT = "stopping"


def shown_preview(events: Iterable[tuple[str, Mapping[str, Any]]]) -> str:
    """The preview built from `(type, data)` events, oldest first, frozen at a stop."""
    preview = ""
    attempt = 0
    stopped = False
    for type_, data in events:
        if type_ == "reset" and data.get("scope") == "run":
            preview, attempt, stopped = "", 0, False
        elif stopped:
            continue
        elif type_ == STOPPING_EVENT:
            stopped = True
        elif type_ == "reset":
            reset_attempt = _count(data.get("attempt"))
            if reset_attempt is not None and reset_attempt < attempt:
                continue
            attempt = reset_attempt or attempt + 1
            preview = ""
        elif type_ == "delta":
            delta_attempt, offset = _count(data.get("attempt")), _count(data.get("offset"))
            text = data.get("text")
            if delta_attempt is None or offset is None or not isinstance(text, str):
                continue
            if delta_attempt < attempt:
                continue
            attempt = delta_attempt
            if offset <= len(preview) < offset + len(text):
                preview = preview[:offset] + text
    return preview


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
