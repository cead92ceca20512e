"""Starting chats and waiting on them: through the gateway or straight through Temporal."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import asyncpg
import httpx

T = TypeVar("T")


async def wait_for(
    predicate: Callable[[], Awaitable[T | None]], timeout_s: float = 60, interval_s: float = 0.1
) -> T:
    """Poll `predicate` until it returns a truthy value; return that value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        value = await predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(interval_s)


async def wait_status(
    gateway: httpx.AsyncClient, workflow_id: str, statuses: set[str], timeout_s: float = 60
) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        body: dict[str, Any] = (await gateway.get(f"/api/workflows/{workflow_id}/status")).json()
        return body if body.get("status") in statuses else None

    return await wait_for(reached, timeout_s=timeout_s, interval_s=0.2)


async def read_all_chunks(
    gateway: httpx.AsyncClient, workflow_id: str, headers: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """Follow the chunk cursor (`GET /chunks?from_id=N`) from 0 to the end, as a polling
    client would."""
    chunks: list[dict[str, Any]] = []
    cursor = 0
    while True:
        response = await gateway.get(
            f"/api/workflows/{workflow_id}/chunks", params={"from_id": cursor}, headers=headers
        )
        response.raise_for_status()
        page = response.json()
        chunks.extend(page["chunks"])
        if not page["chunks"]:
            return chunks
        cursor = int(page["next_from_id"])


async def chunk_rows(db: asyncpg.Pool, workflow_id: str) -> list[asyncpg.Record]:
    """The chunk rows of the chat's current answer (its answer run), in order."""
    rows: list[asyncpg.Record] = await db.fetch(
        """
        SELECT c.idx, c.text, c.worker, c.attempt FROM chunks c
        JOIN generations g ON g.workflow_id = c.workflow_id AND c.run_id = g.answer_run_id
        WHERE c.workflow_id = $1 ORDER BY c.idx
        """,
        workflow_id,
    )
    return rows


async def generations_for(simulator: httpx.AsyncClient, prompt: str) -> dict[str, int]:
    stats = (await simulator.get("/sim/stats")).json()
    counts: dict[str, int] = stats["by_prompt"].get(prompt, {"started": 0, "completed": 0})
    return counts


async def start_chat_directly(
    temporal: Any,
    request: Any,
    user: str = "tester",
    task_queue: str = "chat-queue",
    execution_timeout: Any = None,
) -> Any:
    """Start a ChatStreamingWorkflow through Temporal, bypassing the gateway, as the
    gateway would for `user` (owner, search attributes, task timeout), so the gateway
    serves it to that user. For tests that need ChatRequest fields the API does not
    expose (tiny chunks, checkpoint window, generation mode, cache TTL)."""
    from temporalio.common import SearchAttributePair, TypedSearchAttributes

    from common import contract, search_attributes
    from workflows.chat import ChatStreamingWorkflow

    request.user_id = user
    return await temporal.start_workflow(
        ChatStreamingWorkflow.run,
        request,
        id=f"chat-test-{uuid.uuid4()}",
        task_queue=task_queue,
        task_timeout=contract.WORKFLOW_TASK_TIMEOUT,
        execution_timeout=execution_timeout,
        search_attributes=TypedSearchAttributes(
            [SearchAttributePair(search_attributes.USER, user)]
        ),
    )


class StartRefusedError(Exception):
    """The gateway did not start a chat: an answer a retry would not change, or no
    success before the caller's deadline."""


# Retries of a start wait from FIRST_BACKOFF_S, doubling up to MAX_BACKOFF_S, as the
# UI's client does after a dropped stream (ui/gateway_client.py, there 0.5 s to 5 s).
FIRST_BACKOFF_S = 0.2
MAX_BACKOFF_S = 2.0
RETRYABLE_STARTS = frozenset({429, 502, 503, 504})


async def start_chat_retrying(
    gateway: httpx.AsyncClient,
    body: dict[str, Any],
    *,
    headers: Mapping[str, str] | None = None,
    deadline_s: float = 120.0,
) -> tuple[str, int]:
    """POST /api/workflows/start, retrying connection errors, 429 and 5xx until
    `deadline_s` (0: one attempt). Send an `idempotency_key` in `body` so that a retry
    never starts a second chat. Returns (workflow id, attempts)."""
    give_up = time.monotonic() + deadline_s
    attempts = 0
    backoff = FIRST_BACKOFF_S
    while True:
        attempts += 1
        try:
            response = await gateway.post("/api/workflows/start", json=body, headers=headers)
        except httpx.TransportError as err:
            if time.monotonic() >= give_up:
                raise StartRefusedError(f"gateway unreachable: {err}") from err
        else:
            if response.status_code == 202:
                return str(response.json()["workflow_id"]), attempts
            if response.status_code not in RETRYABLE_STARTS or time.monotonic() >= give_up:
                raise StartRefusedError(f"start answered {response.status_code}: {response.text}")
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, MAX_BACKOFF_S)


async def start_chat(gateway: httpx.AsyncClient, **body: object) -> str:
    """Start a chat through the gateway (`POST /api/workflows/start` with `body`), which
    must accept it at once with 202; return its workflow id."""
    workflow_id, _ = await start_chat_retrying(gateway, dict(body), deadline_s=0)
    return workflow_id
