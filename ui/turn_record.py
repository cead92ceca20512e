"""What a reply message remembers about its turn, and finding the unfinished ones.

Pure data, no Chainlit: a reply's persisted metadata holds a ``TurnRecord`` under
``METADATA_KEY``; ``unfinished_turns`` reads a resumed thread's steps and returns the
replies whose workflow may still be writing, with the prompt that started each;
``retryable_turns`` the replies whose answer failed and can be asked again (they offer
a Retry button).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

METADATA_KEY = "durable_chat"

TurnState = Literal["starting", "running", "done"]


@dataclass(slots=True)
class TurnRecord:
    """What a reply message remembers about its turn, in its persisted metadata.

    ``prompt_message_id`` is the id of the user's message, and the idempotency key of
    the workflow start. ``workflow_id`` is the workflow the reply shows: after a Retry,
    the new one, and ``retry_of`` the failed one it asked again. ``retryable``: the turn
    is done, its answer failed, and the gateway can ask it again.
    """

    prompt_message_id: str
    workflow_id: str | None = None
    state: TurnState = "starting"
    retry_of: str | None = None
    retryable: bool = False
    parts: list[str] = field(default_factory=list)
    """Chats whose answers come before ``workflow_id``'s in this reply: the answer was
    continued (Continue), and the reply shows them joined, with each one's badges."""
    edit_of: str | None = None
    """The chat whose user message this turn edited (the gateway's edit starts it)."""
    conversation_id: str | None = None

    def to_metadata(self) -> dict[str, Any]:
        return {METADATA_KEY: asdict(self)}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any] | None) -> TurnRecord | None:
        data = (metadata or {}).get(METADATA_KEY)
        if not isinstance(data, Mapping) or not data.get("prompt_message_id"):
            return None
        state = data.get("state")
        return cls(
            prompt_message_id=str(data["prompt_message_id"]),
            workflow_id=str(data["workflow_id"]) if data.get("workflow_id") else None,
            state=state if state in ("starting", "running", "done") else "running",
            retry_of=str(data["retry_of"]) if data.get("retry_of") else None,
            retryable=data.get("retryable") is True,
            parts=[str(p) for p in data.get("parts") or () if p],
            edit_of=str(data["edit_of"]) if data.get("edit_of") else None,
            conversation_id=(str(data["conversation_id"]) if data.get("conversation_id") else None),
        )


@dataclass(frozen=True, slots=True)
class UnfinishedTurn:
    """A reply found in a resumed thread whose workflow may still be writing."""

    reply: dict[str, Any]
    record: TurnRecord
    prompt: str | None


def unfinished_turns(steps: Sequence[Mapping[str, Any]]) -> list[UnfinishedTurn]:
    """The replies of a thread whose turn is not done, with the prompt that started them."""
    prompts = {
        str(step["id"]): str(step.get("output") or "")
        for step in steps
        if step.get("type") == "user_message"
    }
    found = []
    for step in steps:
        record = TurnRecord.from_metadata(step.get("metadata"))
        if record is not None and record.state != "done":
            found.append(
                UnfinishedTurn(
                    reply=dict(step),
                    record=record,
                    prompt=prompts.get(record.prompt_message_id),
                )
            )
    return found


@dataclass(frozen=True, slots=True)
class RetryableTurn:
    """A reply whose answer failed and can be asked again: ``workflow_id`` is the failed one."""

    reply_id: str
    workflow_id: str


def retryable_turns(steps: Sequence[Mapping[str, Any]]) -> list[RetryableTurn]:
    """The replies of a thread that should offer a Retry button."""
    found = []
    for step in steps:
        record = TurnRecord.from_metadata(step.get("metadata"))
        if record and record.state == "done" and record.retryable and record.workflow_id:
            found.append(RetryableTurn(reply_id=str(step["id"]), workflow_id=record.workflow_id))
    return found
