"""What a reply shows of its answer, rebuilt from the chat's event stream.

Pure, no Chainlit and no I/O: ``LiveAnswer.apply`` takes the events of
``GET /api/workflows/{id}/events`` in order and keeps

- the *preview*: the live text of the LLM call in progress (``delta`` events, placed
  by offset). A retried call that re-attached to the same generation continues it; a
  ``reset`` (the call started over, e.g. after a worker died with a provider that
  cannot resume) drops it, because the new attempt streams the answer again from its
  first token; a ``reset`` with ``"scope": "run"`` (an operator reset the chat in
  Temporal) drops the preview and the chunks: the new run's answer follows;
- the *checkpointed* chunks (``chunk`` events, placed by index, they may arrive out
  of order): the durable answer;
- the stage, the chunk count and, at the end, the outcome;
- a ``stopping`` event (someone stopped the chat) freezes the preview: a stopped answer
  keeps exactly the text shown up to it (the gateway's common.preview has the same
  rules), and what the LLM sent before it noticed the stop reached no one.

``text`` is what the reply shows: the contiguous checkpointed chunks from chunk 0,
continued by the part of the preview beyond them. The checkpointed answer is the last
attempt's preview cut into pieces, so the text grows token by token and then is
confirmed chunk by chunk without a jump, and nothing is ever shown twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ui.gateway_client import ChatEvent

DEFAULT_RESTART_NOTE = "The answer restarted: the LLM call was retried from the start."
DEFAULT_RUN_RESET_NOTE = "An operator reset this chat in Temporal: the answer is rebuilt."


@dataclass(slots=True)
class LiveAnswer:
    """The state of one answer, as far as its events have been applied."""

    stage: str | None = None
    total_chunks: int | None = None
    attempt: int = 0
    preview: str = ""
    chunks: dict[int, str] = field(default_factory=dict)
    restart_notes: list[str] = field(default_factory=list)
    outcome: str | None = None
    error: str | None = None
    stopping: bool = False

    def apply(self, event: ChatEvent) -> None:
        data = event.data
        if event.type == "stopping":
            self.stopping = True
        elif event.type == "stage":
            self.stage = _text(data.get("stage")) or self.stage
            self.total_chunks = _count(data.get("total_chunks")) or self.total_chunks
        elif self.stopping and event.type == "delta":
            return  # after the stop: the preview stays as it was shown
        elif event.type == "delta":
            self._add_delta(data.get("attempt"), data.get("offset"), data.get("text"))
        elif event.type == "reset" and data.get("scope") == "run":
            # An operator reset the chat in Temporal: the new run's answer follows
            # (its chunks, from 0, and its own attempts), nothing of the old one stays.
            self.attempt = 0
            self.preview = ""
            self.stopping = False
            self.chunks.clear()
            self.total_chunks = None
            self.outcome = self.error = None
            self.restart_notes.append(_text(data.get("reason")) or DEFAULT_RUN_RESET_NOTE)
        elif event.type == "reset" and not self.stopping:
            attempt = _count(data.get("attempt"))
            if attempt is not None and attempt < self.attempt:
                return  # an older attempt's reset: the preview is already newer
            self.attempt = attempt or self.attempt + 1
            self.preview = ""
            self.restart_notes.append(_text(data.get("reason")) or DEFAULT_RESTART_NOTE)
        elif event.type == "chunk":
            index, text = _count(data.get("index")), data.get("text")
            if index is not None and isinstance(text, str):
                self.chunks[index] = text
            self.total_chunks = _count(data.get("total")) or self.total_chunks
        elif event.is_terminal:
            self.outcome = event.type
            self.stage = event.type
            self.error = _text(data.get("error"))

    def _add_delta(self, attempt: object, offset: object, text: object) -> None:
        attempt_no, at = _count(attempt), _count(offset)
        if attempt_no is None or at is None or not isinstance(text, str):
            return
        if attempt_no < self.attempt:
            return  # late text of an attempt that was reset or taken over
        # A newer attempt without a reset re-attached to the same generation (resumable
        # mode): it continues the preview at its offset. Only a reset drops the preview.
        self.attempt = attempt_no
        if at > len(self.preview):
            return  # a gap: keep the preview as it is, the chunks will complete the answer
        if at + len(text) > len(self.preview):  # text already there (a repeat) is skipped
            self.preview = self.preview[:at] + text

    @property
    def checkpointed(self) -> str:
        """The chunks saved so far from chunk 0 on, up to the first one still missing."""
        parts: list[str] = []
        while len(parts) in self.chunks:
            parts.append(self.chunks[len(parts)])
        return "".join(parts)

    @property
    def chunks_saved(self) -> int:
        return len(self.chunks)

    @property
    def progress(self) -> float | None:
        """Percent of the chunks saved, once their number is known."""
        if not self.total_chunks:
            return None
        return min(100.0, 100.0 * self.chunks_saved / self.total_chunks)

    @property
    def text(self) -> str:
        """What the reply shows: the checkpointed text, continued by the live preview."""
        saved = self.checkpointed
        if len(self.preview) > len(saved) and self.preview.startswith(saved):
            return self.preview
        return saved

    @property
    def restarts(self) -> int:
        return len(self.restart_notes)


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _text(value: object) -> str | None:
    return str(value) if value not in (None, "") else None
