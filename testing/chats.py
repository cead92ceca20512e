"""Starting chats and waiting on them: through the gateway or straight through Temporal."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
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


async def read_all_chunks(gateway: httpx.AsyncClient, workflow_id: str) -> list[dict[str, Any]]:
    """Follow the chunk cursor from 0 to the end, as a client would."""
    chunks: list[dict[str, Any]] = []
    cursor = 0
    while True:
        page = (
            await gateway.get(f"/api/workflows/{workflow_id}/chunks", params={"from_id": cursor})
        ).json()
        chunks.extend(page["chunks"])
        if not page["chunks"]:
            return chunks
        cursor = page["next_from_id"]


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


async def start_chat(gateway: httpx.AsyncClient, **body: object) -> str:
    """Start a chat through the gateway (`POST /api/workflows/start` with `body`, which it
    must accept with 202); return its workflow id."""
    response = await gateway.post("/api/workflows/start", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["workflow_id"])
