"""The UI's only way to the backend: typed HTTP calls to the gateway, and a follower.

``GatewayClient`` wraps the gateway's workflow routes. ``follow_workflow`` turns them
into an async stream of ``WorkflowUpdate`` (new chunks plus the latest status) by
polling; it is the one place to change when the gateway's SSE route replaces polling.

Exceptions, caught by type, never by message (``str(error)`` is written for people):

    GatewayError              base class
    ├── GatewayUnavailable    network error, timeout or 5xx: worth retrying later
    ├── InvalidPrompt         422 or 413: the gateway rejected the prompt, the message says why
    ├── WorkflowNotFound      404: the gateway knows no such workflow
    └── GatewayRejected       any other 4xx
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

TERMINAL_STATUSES = frozenset(
    {"completed", "failed", "cancelled", "canceled", "terminated", "timed_out"}
)


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
        )


@dataclass(frozen=True, slots=True)
class Chunk:
    """One checkpointed piece of an answer; answers are their chunks' text in id order."""

    id: int
    text: str


@dataclass(frozen=True, slots=True)
class ChunkPage:
    """Chunks from a given id on, and the id to ask for next."""

    chunks: tuple[Chunk, ...]
    next_from_id: int


@dataclass(frozen=True, slots=True)
class WorkflowUpdate:
    """One step of ``follow_workflow``: chunks not yielded before, and the latest status.

    ``problem`` is set (and ``new_chunks`` empty) while the gateway cannot be reached and
    the follower keeps retrying.
    """

    status: WorkflowStatus
    new_chunks: tuple[Chunk, ...] = ()
    problem: str | None = None


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


@dataclass
class GatewayClient:
    """Async client of the gateway's ``/api/workflows`` routes."""

    base_url: str
    timeout_s: float = 10.0
    transport: httpx.AsyncBaseTransport | None = None
    _http: httpx.AsyncClient = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._http = httpx.AsyncClient(
            base_url=self.base_url.rstrip("/"),
            timeout=self.timeout_s,
            transport=self.transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> GatewayClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _request(
        self, method: str, path: str, *, json: Any = None, params: Any = None
    ) -> Any:
        try:
            response = await self._http.request(method, path, json=json, params=params)
        except httpx.HTTPError as exc:
            raise GatewayUnavailable(
                f"The gateway at {self.base_url} cannot be reached ({type(exc).__name__})."
            ) from exc
        if response.is_success:
            return response.json() if response.content else None
        message = _detail_message(response)
        code = response.status_code
        if code in (413, 422):
            raise InvalidPrompt(message, status_code=code)
        if code == 404:
            raise WorkflowNotFound(message, status_code=code)
        if code >= 500:
            raise GatewayUnavailable(message, status_code=code)
        raise GatewayRejected(message, status_code=code)

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

    async def get_chunks(self, workflow_id: str, from_id: int = 0) -> ChunkPage:
        data = await self._request(
            "GET", f"/api/workflows/{workflow_id}/chunks", params={"from_id": from_id}
        )
        chunks = tuple(
            Chunk(id=int(item["id"]), text=str(item.get("text") or ""))
            for item in data.get("chunks") or ()
        )
        next_from_id = data.get("next_from_id")
        if next_from_id is None:
            next_from_id = chunks[-1].id + 1 if chunks else from_id
        return ChunkPage(chunks=chunks, next_from_id=int(next_from_id))

    async def cancel_workflow(self, workflow_id: str) -> None:
        await self._request("POST", f"/api/workflows/{workflow_id}/cancel")


async def follow_workflow(
    client: GatewayClient,
    workflow_id: str,
    *,
    interval_s: float = 0.2,
    max_outage_s: float = 600.0,
) -> AsyncIterator[WorkflowUpdate]:
    """Yield the workflow's chunks from the first one on, and its status, until it ends.

    Each chunk is yielded once, in id order. An update is yielded whenever new chunks or
    a changed status arrive; the last update carries a terminal status and follows every
    chunk saved. While the gateway is unreachable, updates carry ``problem`` and polling
    backs off; after ``max_outage_s`` without an answer, the last ``GatewayUnavailable``
    is raised. ``WorkflowNotFound`` is raised at once.
    """
    next_from_id = 0
    last_chunk_id: int | None = None
    last_status: WorkflowStatus | None = None
    outage_started: float | None = None
    backoff_s = interval_s

    while True:
        try:
            status = await client.get_status(workflow_id)
            # Read chunks after the status: once the status is terminal, this read sees
            # every chunk the workflow saved.
            fresh: list[Chunk] = []
            while True:
                page = await client.get_chunks(workflow_id, next_from_id)
                for chunk in page.chunks:
                    if last_chunk_id is None or chunk.id > last_chunk_id:
                        fresh.append(chunk)
                        last_chunk_id = chunk.id
                advanced = page.next_from_id > next_from_id
                next_from_id = max(next_from_id, page.next_from_id)
                if not (status.is_terminal and page.chunks and advanced):
                    break
        except GatewayUnavailable as exc:
            now = time.monotonic()
            outage_started = outage_started or now
            if now - outage_started > max_outage_s:
                raise
            known = last_status or WorkflowStatus(workflow_id=workflow_id, status="unknown")
            yield WorkflowUpdate(status=known, problem=exc.message)
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, 5.0)
            continue

        outage_started = None
        backoff_s = interval_s
        if fresh or status != last_status:
            yield WorkflowUpdate(status=status, new_chunks=tuple(fresh))
        last_status = status
        if status.is_terminal:
            return
        await asyncio.sleep(interval_s)
