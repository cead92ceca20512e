"""The UI's only way to the backend: typed HTTP calls to the gateway, and the event stream.

``GatewayClient`` wraps the gateway's workflow routes; ``GatewayClient.events`` reads
one connection of a chat's Server-Sent Events stream (``GET /api/workflows/{id}/events``).
``follow_events`` follows that stream to its terminal event across dropped connections:
it reconnects with the last event id it got (``Last-Event-ID``), so every event arrives
exactly once and in order, with a bounded backoff, and gives up after a long outage.

Exceptions, caught by type, never by message (``str(error)`` is written for people):

    GatewayError              base class
    ├── GatewayUnavailable    network error, timeout or 5xx: worth retrying later
    ├── InvalidPrompt         422 or 413: the gateway rejected the prompt, the message says why
    ├── WorkflowNotFound      404: the gateway knows no such workflow
    └── GatewayRejected       any other 4xx (409: a chat that cannot be retried)
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import aconnect_sse

TERMINAL_STATUSES = frozenset(
    {"completed", "failed", "cancelled", "canceled", "stopped", "terminated", "timed_out"}
)
# Event types that end a chat's stream; a workflow terminated or timed out in Temporal
# ends without one (only its status says so).
TERMINAL_EVENTS = frozenset(
    {"completed", "failed", "cancelled", "stopped", "terminated", "timed_out"}
)
# The gateway sends a keep-alive comment every 15 s: a stream silent for longer is dead.
STREAM_READ_TIMEOUT_S = 45.0


class GatewayError(Exception):
    """Base of the gateway errors; the message is fit to show to people."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


class GatewayUnavailable(GatewayError):
    """The gateway could not be reached or failed on its side (5xx): retry later."""


class InvalidPrompt(GatewayError):
    """The gateway refused the prompt (422, or 413 when it is too long)."""


class WorkflowNotFound(GatewayError):
    """The gateway knows no workflow with this id (404)."""


class GatewayRejected(GatewayError):
    """The gateway refused the request for another reason (4xx)."""


def _as_int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _as_float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class WorkflowStatus:
    """What ``GET /api/workflows/{id}/status`` says; optional fields are None when absent."""

    workflow_id: str
    status: str
    stage: str | None = None
    progress: float | None = None
    chunks_saved: int | None = None
    total_chunks: int | None = None
    error: str | None = None
    duration_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cost_usd: float | None = None
    cache_hit: bool = False
    saved_usd: float | None = None
    saved_ms: float | None = None
    finish_reason: str | None = None
    notice: str | None = None
    priced: bool = True
    llm_calls: int | None = None
    billed_completion_tokens: int | None = None
    billed_estimated: bool = False
    usage_estimated: bool = False
    retryable: bool = False
    retry_of: str | None = None

    @property
    def is_terminal(self) -> bool:
        """True once the workflow will not change any more."""
        return self.status.lower() in TERMINAL_STATUSES

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WorkflowStatus:
        usage = data.get("usage")
        usage = usage if isinstance(usage, Mapping) else {}
        prompt_tokens = _as_int(usage.get("prompt_tokens", data.get("prompt_tokens")))
        completion_tokens = _as_int(usage.get("completion_tokens", data.get("completion_tokens")))
        total_tokens = _as_int(usage.get("total_tokens", data.get("total_tokens")))
        if total_tokens is None and prompt_tokens is not None and completion_tokens is not None:
            total_tokens = prompt_tokens + completion_tokens
        error = data.get("error")
        billed = data.get("billed_usage")
        billed = billed if isinstance(billed, Mapping) else {}
        return cls(
            workflow_id=str(data.get("workflow_id", "")),
            status=str(data.get("status") or "unknown").lower(),
            stage=str(data["stage"]) if data.get("stage") else None,
            progress=_as_float(data.get("progress")),
            chunks_saved=_as_int(data.get("chunks_saved")),
            total_chunks=_as_int(data.get("total_chunks")),
            error=str(error) if error else None,
            duration_ms=_as_float(data.get("duration_ms")),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=total_tokens,
            cost_usd=_as_float(data.get("cost_usd")),
            cache_hit=data.get("cache_hit") is True,
            saved_usd=_as_float(data.get("saved_usd")),
            saved_ms=_as_float(data.get("saved_ms")),
            finish_reason=str(data["finish_reason"]) if data.get("finish_reason") else None,
            notice=str(data["notice"]) if data.get("notice") else None,
            priced=data.get("priced") is not False,
            llm_calls=_as_int(data.get("llm_calls")),
            billed_completion_tokens=_as_int(billed.get("completion_tokens")),
            billed_estimated=billed.get("estimated") is True,
            usage_estimated=usage.get("estimated") is True,
            retryable=data.get("retryable") is True,
            retry_of=str(data["retry_of"]) if data.get("retry_of") else None,
        )


@dataclass(frozen=True, slots=True)
class TurnView:
    """One turn of a conversation's current branch (``GET /api/conversations/{id}``)."""

    workflow_id: str
    prompt: str
    stage: str
    answer: str
    continued_by: tuple[str, ...]
    versions: tuple[str, ...]
    continuable: bool

    @property
    def chats(self) -> tuple[str, ...]:
        """The turn's chats in order: its first one, then those that continue it."""
        return (self.workflow_id, *self.continued_by)


@dataclass(frozen=True, slots=True)
class ConversationView:
    conversation_id: str
    head_id: str | None
    turns: tuple[TurnView, ...]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ConversationView:
        turns = tuple(
            TurnView(
                workflow_id=str(t["workflow_id"]),
                prompt=str(t.get("prompt") or ""),
                stage=str(t.get("stage") or ""),
                answer=str(t.get("answer") or ""),
                continued_by=tuple(str(i) for i in t.get("continued_by") or ()),
                versions=tuple(str(i) for i in t.get("versions") or ()),
                continuable=t.get("continuable") is True,
            )
            for t in data.get("turns") or ()
            if isinstance(t, Mapping)
        )
        head = data.get("head_id")
        return cls(str(data.get("conversation_id", "")), str(head) if head else None, turns)

    def turn_of(self, workflow_id: str) -> tuple[int, TurnView] | None:
        """The position and turn of the branch that ``workflow_id`` is a chat or a
        version of."""
        for index, turn in enumerate(self.turns):
            if workflow_id in turn.chats or workflow_id in turn.versions:
                return index, turn
        return None


@dataclass(frozen=True, slots=True)
class ChatEvent:
    """One event of a chat's stream: ``id`` is its sequence number (1, 2, 3, …)."""

    id: int
    type: str
    data: Mapping[str, Any]

    @property
    def is_terminal(self) -> bool:
        """True for the last event of the stream (completed, failed, cancelled,
        terminated or timed_out)."""
        return self.type in TERMINAL_EVENTS


@dataclass(frozen=True, slots=True)
class StreamInterrupted:
    """Yielded by ``follow_events`` when the stream dropped: it reconnects in ``retry_in_s``."""

    message: str
    retry_in_s: float


def _detail_message(response: httpx.Response) -> str:
    """The human message of a gateway error response (``{"detail": ...}``)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, Mapping) else None
    if isinstance(detail, str) and detail:
        return detail
    if isinstance(detail, list):  # FastAPI's validation errors
        messages = [str(item.get("msg")) for item in detail if isinstance(item, Mapping)]
        if messages:
            return "; ".join(messages)
    if isinstance(detail, Mapping) and detail.get("message"):
        return str(detail["message"])
    return f"the gateway answered {response.status_code} {response.reason_phrase}"


def _raise_for_status(response: httpx.Response) -> None:
    """Raise the typed error of a failed gateway response (its body must have been read)."""
    if response.is_success:
        return
    message = _detail_message(response)
    code = response.status_code
    if code in (413, 422):
        raise InvalidPrompt(message, status_code=code)
    if code == 404:
        raise WorkflowNotFound(message, status_code=code)
    if code >= 500:
        raise GatewayUnavailable(message, status_code=code)
    raise GatewayRejected(message, status_code=code)


def _parse_event(event_id: str, event_type: str, data: str) -> ChatEvent:
    try:
        parsed = json.loads(data) if data else {}
        seq = int(event_id)
    except ValueError as exc:
        raise GatewayUnavailable("The gateway sent a malformed event.") from exc
    return ChatEvent(id=seq, type=event_type, data=parsed if isinstance(parsed, Mapping) else {})


@dataclass
class GatewayClient:
    """Async client of the gateway's ``/api/workflows`` routes."""

    base_url: str
    timeout_s: float = 10.0
    transport: httpx.AsyncBaseTransport | None = None
    api_key: str | None = field(default=None, repr=False)
    user_headers: Callable[[], dict[str, str]] | None = field(default=None, repr=False)
    """Headers added to every request, made per request: the signed assertion of the
    person this client acts for (ui/assertions.py)."""
    _http: httpx.AsyncClient = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._http = httpx.AsyncClient(
            base_url=self.base_url.rstrip("/"),
            timeout=self.timeout_s,
            transport=self.transport,
            headers={"Authorization": f"Bearer {self.api_key}"} if self.api_key else None,
        )

    def acting_for(self, user_headers: Callable[[], dict[str, str]]) -> GatewayClient:
        """A client for one person, sharing this one's connections (never close it)."""
        clone = copy.copy(self)
        clone.user_headers = user_headers
        return clone

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**(self.user_headers() if self.user_headers else {}), **(extra or {})}

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> GatewayClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _unreachable(self, exc: Exception) -> GatewayUnavailable:
        return GatewayUnavailable(
            f"The gateway at {self.base_url} cannot be reached ({type(exc).__name__})."
        )

    async def _request(
        self, method: str, path: str, *, json: Any = None, params: Any = None
    ) -> Any:
        try:
            response = await self._http.request(
                method, path, json=json, params=params, headers=self._headers()
            )
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        _raise_for_status(response)
        return response.json() if response.content else None

    async def start_workflow(
        self,
        prompt: str,
        *,
        conversation_id: str | None = None,
        idempotency_key: str | None = None,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> str:
        """Start a ``ChatStreamingWorkflow``; returns its id.

        The same ``idempotency_key`` always yields the same workflow id: a repeated
        submit never starts a second workflow.
        """
        body: dict[str, Any] = {"prompt": prompt}
        optional = {
            "conversation_id": conversation_id,
            "idempotency_key": idempotency_key,
            "model": model,
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        body.update({key: value for key, value in optional.items() if value is not None})
        data = await self._request("POST", "/api/workflows/start", json=body)
        return str(data["workflow_id"])

    async def get_status(self, workflow_id: str) -> WorkflowStatus:
        data = await self._request("GET", f"/api/workflows/{workflow_id}/status")
        return WorkflowStatus.from_json({"workflow_id": workflow_id, **data})

    async def cancel_workflow(self, workflow_id: str) -> None:
        await self._request("POST", f"/api/workflows/{workflow_id}/cancel")

    async def retry(self, workflow_id: str) -> str:
        """Ask a failed chat again; returns the id of the new chat.

        The gateway starts one new chat per failed chat, however often this is called
        (a double click follows the same new workflow). ``GatewayRejected`` (409): the
        chat has not failed, or asking again would fail the same way.
        """
        data = await self._request("POST", f"/api/workflows/{workflow_id}/retry")
        return str(data["workflow_id"])

    async def _new_chat(self, path: str, body: dict[str, Any]) -> str:
        data = await self._request("POST", path, json={k: v for k, v in body.items() if v})
        return str(data["workflow_id"])

    async def regenerate(self, workflow_id: str, *, idempotency_key: str | None = None) -> str:
        """Ask the turn of ``workflow_id`` again, without the answer cache: the id of the
        new version (the same one for the same key)."""
        path = f"/api/workflows/{workflow_id}/regenerate"
        return await self._new_chat(path, {"idempotency_key": idempotency_key})

    async def edit(
        self, workflow_id: str, prompt: str, *, idempotency_key: str | None = None
    ) -> str:
        """Send ``prompt`` in place of the user's message of ``workflow_id``'s turn: the
        id of the new chat, the first of a new branch."""
        path = f"/api/workflows/{workflow_id}/edit"
        return await self._new_chat(path, {"prompt": prompt, "idempotency_key": idempotency_key})

    async def continue_answer(self, workflow_id: str, *, idempotency_key: str | None = None) -> str:
        """Carry on an answer that was stopped or cut at the token limit: the id of the
        chat that continues it. ``GatewayRejected`` (409): it cannot be continued."""
        path = f"/api/workflows/{workflow_id}/continue"
        return await self._new_chat(path, {"idempotency_key": idempotency_key})

    async def conversation(self, conversation_id: str) -> ConversationView:
        """The branch of the conversation the user is on."""
        data = await self._request("GET", f"/api/conversations/{conversation_id}")
        return ConversationView.from_json(data)

    async def choose_version(self, conversation_id: str, workflow_id: str) -> ConversationView:
        """Switch the conversation to the branch through ``workflow_id``."""
        data = await self._request(
            "PUT",
            f"/api/conversations/{conversation_id}/head",
            json={"workflow_id": workflow_id},
        )
        return ConversationView.from_json(data)

    async def answer_text(self, workflow_id: str) -> str:
        """The chat's durable answer (its chunks, by cursor)."""
        parts: list[str] = []
        cursor = 0
        while True:
            page = await self._request(
                "GET", f"/api/workflows/{workflow_id}/chunks", params={"from_id": cursor}
            )
            chunks = page.get("chunks") or []
            if not chunks:
                return "".join(parts)
            parts += [str(chunk.get("text", "")) for chunk in chunks]
            cursor = int(page["next_from_id"])

    async def events(self, workflow_id: str, *, after: int = 0) -> AsyncGenerator[ChatEvent, None]:
        """One connection to the chat's event stream: the events with ids above ``after``.

        Ends when the gateway ends the stream (right after the terminal event, or when it
        shuts down); a connection that cannot be opened, breaks or stays silent raises
        ``GatewayUnavailable``. Read it to its end: a response left half-read is closed
        later by the garbage collector, from another task, which httpcore cannot do.
        """
        headers = self._headers({"Last-Event-ID": str(after)} if after else None)
        timeout = httpx.Timeout(self.timeout_s, read=max(self.timeout_s, STREAM_READ_TIMEOUT_S))
        path = f"/api/workflows/{workflow_id}/events"
        try:
            async with aconnect_sse(
                self._http, "GET", path, headers=headers, timeout=timeout
            ) as source:
                if not source.response.is_success:
                    await source.response.aread()
                    _raise_for_status(source.response)
                async for sse in source.aiter_sse():
                    yield _parse_event(sse.id, sse.event, sse.data)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc


async def follow_events(
    client: GatewayClient,
    workflow_id: str,
    *,
    after: int = 0,
    first_backoff_s: float = 0.5,
    max_backoff_s: float = 5.0,
    give_up_after_s: float = 300.0,
) -> AsyncIterator[ChatEvent | StreamInterrupted]:
    """Yield the chat's events with ids above ``after``, in order, each once, up to the
    terminal event, reconnecting whenever the stream drops.

    A reconnect asks for the events after the last one yielded (``Last-Event-ID``).
    Before each reconnect a ``StreamInterrupted`` says why and when; the pause doubles
    from ``first_backoff_s`` up to ``max_backoff_s`` and starts again once an event
    arrives. When the stream has kept failing for ``give_up_after_s`` with no event in
    between, ``GatewayUnavailable`` is raised. ``WorkflowNotFound`` (and any other
    refusal) is raised at once.
    """
    last_id = after
    ended = False
    backoff_s = first_backoff_s
    outage_since: float | None = None  # first failure since the last event
    while True:
        try:
            async with contextlib.aclosing(client.events(workflow_id, after=last_id)) as events:
                async for event in events:  # to the end: the gateway closes after the last
                    if ended or event.id <= last_id:
                        continue  # never twice, whatever the server sends
                    last_id = event.id
                    backoff_s, outage_since = first_backoff_s, None
                    ended = event.is_terminal
                    yield event
            if ended:
                return
            problem = "The gateway ended the event stream early."
        except GatewayUnavailable as exc:
            if ended:
                return  # the connection broke after the last event: nothing was lost
            problem = exc.message
        now = time.monotonic()
        outage_since = now if outage_since is None else outage_since
        if now - outage_since >= give_up_after_s:
            raise GatewayUnavailable(
                f"{problem} Still no answer after {give_up_after_s:.0f} s; stopped retrying."
            )
        yield StreamInterrupted(problem, retry_in_s=backoff_s)
        await asyncio.sleep(backoff_s)
        backoff_s = min(backoff_s * 2, max_backoff_s)
