"""The exceptions of durable-chat.

Hierarchy::

    DurableChatError                 base of everything raised on purpose
    ├── InvalidRequestError          a malformed request the caller can fix (422)
    │   └── InvalidPromptError       the prompt cannot be answered; never retried
    ├── ChatNotFoundError            unknown workflow id (or not the caller's)
    └── DependencyUnavailableError   Temporal or PostgreSQL cannot be reached now

Activities turn `InvalidPromptError` into a non-retryable Temporal
`ApplicationError` whose `type` is the class name, so the gateway can recognise it
by type, never by message text.
"""

from __future__ import annotations


class DurableChatError(Exception):
    """Base class of the errors durable-chat raises on purpose."""


class InvalidRequestError(DurableChatError):
    """The request is malformed in a way the caller can fix; the message says how."""


class InvalidPromptError(InvalidRequestError):
    """The prompt cannot be answered as sent; the message says why, for a person."""


class ChatNotFoundError(DurableChatError):
    """No chat with this workflow id is visible to the caller."""


class DependencyUnavailableError(DurableChatError):
    """A dependency (named in `dependency`) is down or unreachable."""

    def __init__(self, dependency: str, detail: str = "") -> None:
        self.dependency = dependency
        self.detail = detail
        super().__init__(f"{dependency} is unavailable" + (f": {detail}" if detail else ""))
