"""Bookkeeping that lets tests prove what the simulator was asked and what it generated."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

#: Maximum number of requests kept by :class:`RequestLog`.
REQUEST_LOG_CAPACITY = 1000  # a load benchmark reads back the requests of 200 chats and more


@dataclass(slots=True)
class _Counts:
    started: int = 0
    completed: int = 0


class GenerationStats:
    """Counts generations, globally and per prompt (the last user message of the request), and
    the tokens billed for them.

    Contract: :meth:`record_started` is called once per generation when the simulator begins
    producing it (its input tokens are billed then); :meth:`record_completed` at most once per
    generation, when it reached its end (for chat completions: when its last token was
    delivered to the client). Hence ``completed <= started`` always holds, globally and per
    prompt, also across :meth:`reset`. :meth:`record_output_tokens` is called as tokens are
    produced, so failed, cancelled and disconnected generations are billed for what they
    produced.
    """

    def __init__(self) -> None:
        self._epoch = 0
        self._total = _Counts()
        self._by_prompt: dict[str, _Counts] = {}
        self._input_tokens = 0
        self._output_tokens = 0

    def record_started(self, prompt: str, input_tokens: int = 0) -> int:
        """Count a generation that begins producing tokens and bill its ``input_tokens``;
        return the epoch to complete it (and bill its output) in."""
        self._total.started += 1
        self._by_prompt.setdefault(prompt, _Counts()).started += 1
        self._input_tokens += input_tokens
        return self._epoch

    def record_output_tokens(self, count: int, epoch: int) -> None:
        """Bill ``count`` newly produced tokens of a generation started in ``epoch`` (tokens of
        generations started before the last :meth:`reset` are ignored)."""
        if epoch == self._epoch:
            self._output_tokens += count

    def record_completed(self, prompt: str, epoch: int) -> None:
        """Count a generation whose last token was delivered.

        ``epoch`` is the value :meth:`record_started` returned; completions of generations
        started before the last :meth:`reset` are ignored.
        """
        if epoch != self._epoch:
            return
        self._total.completed += 1
        self._by_prompt.setdefault(prompt, _Counts()).completed += 1

    def reset(self) -> None:
        """Forget all counts."""
        self._epoch += 1
        self._total = _Counts()
        self._by_prompt.clear()
        self._input_tokens = 0
        self._output_tokens = 0

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready view, in the shape served by ``GET /sim/stats``."""
        return {
            "generations_started": self._total.started,
            "generations_completed": self._total.completed,
            "input_tokens": self._input_tokens,
            "output_tokens": self._output_tokens,
            "by_prompt": {
                prompt: {"started": counts.started, "completed": counts.completed}
                for prompt, counts in self._by_prompt.items()
            },
        }


class RequestLog:
    """The most recent generation requests received (at most ``capacity``), oldest first."""

    def __init__(self, capacity: int = REQUEST_LOG_CAPACITY) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=capacity)

    def record(
        self,
        *,
        api: str,
        model: str,
        messages: list[dict[str, Any]],
        max_tokens: int,
        temperature: float,
        stream: bool,
        **details: Any,
    ) -> dict[str, Any]:
        """Append one request; the oldest entry is dropped when the log is full.

        ``api`` names the endpoint (``"chat.completions"`` or ``"responses"``); ``messages`` are
        the chat messages the text was generated from (for the Responses API: the instructions
        as a system message, then the input). ``details`` are added to the entry as they are.
        Returns the entry, which the caller may complete later (e.g. with the id it created).
        """
        entry: dict[str, Any] = {
            "received_at": datetime.now(UTC).isoformat(),
            "api": api,
            "model": model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": stream,
            **details,
        }
        self._entries.append(entry)
        return entry

    def recent(self, limit: int) -> list[dict[str, Any]]:
        """The ``limit`` newest entries, newest last."""
        if limit <= 0:
            return []
        return list(self._entries)[-limit:]

    def clear(self) -> None:
        """Forget all entries."""
        self._entries.clear()
