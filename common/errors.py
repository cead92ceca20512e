"""The exceptions of durable-chat.

Hierarchy::

    DurableChatError                 base of everything raised on purpose
    ├── InvalidRequestError          a malformed request the caller can fix (422)
    │   ├── ModelNotAllowedError     a model outside ALLOWED_MODELS (422 on /api and /v1)
    │   └── InvalidPromptError       the prompt cannot be answered; never retried
    ├── ChatNotFoundError            unknown workflow id (or not the caller's)
    ├── ChatNotRetryableError        retry asked of a chat that did not fail, or cannot (409)
    ├── RequestConflictError         the request conflicts with what exists (409)
    ├── NotAuthenticatedError        no valid API key (401)
    ├── RateLimitedError             too many requests or chats for this user (429)
    └── DependencyUnavailableError   Temporal or PostgreSQL cannot be reached now

Activities turn `InvalidPromptError` into a non-retryable Temporal
`ApplicationError` whose `type` is the class name, so the gateway can recognise it
by type, never by message text.
"""

from __future__ import annotations


class DurableChatError(Exception):
    """Base class of the errors durable-chat raises on purpose."""


class InvalidRequestError(DurableChatError):
    """The request is malformed in a way the caller can fix; the message says how.
    `param` names the offending field where one does (OpenAI's error shape has it)."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


class ModelNotAllowedError(InvalidRequestError):
    """The request names a model outside ALLOWED_MODELS (422, on every API)."""


class InvalidPromptError(InvalidRequestError):
    """The prompt cannot be answered as sent; the message says why, for a person."""


class ChatNotFoundError(DurableChatError):
    """No chat with this workflow id is visible to the caller."""

    def __init__(
        self, workflow_id: str, message: str | None = None, code: str = "not_found"
    ) -> None:
        super().__init__(workflow_id)
        self.message = message or f"No chat with id {workflow_id}."
        self.code = code


class ChatNotRetryableError(DurableChatError):
    """A retry was asked of a chat that is not failed, or whose failure a retry repeats."""


class RequestConflictError(DurableChatError):
    """The request conflicts with the state of what it names: an Idempotency-Key reused
    with another body, a delete of a response that is still running."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class NotAuthenticatedError(DurableChatError):
    """The request carries no valid API key."""


class RateLimitedError(DurableChatError):
    """The caller is over a limit; `retry_after_s` says when to try again."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DependencyUnavailableError(DurableChatError):
    """A dependency (named in `dependency`) is down or unreachable."""

    def __init__(self, dependency: str, detail: str = "") -> None:
        self.dependency = dependency
        self.detail = detail
        super().__init__(f"{dependency} is unavailable" + (f": {detail}" if detail else ""))
