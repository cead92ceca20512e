"""Access control: API keys, chats private to their user, per-user limits."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from testing.chats import wait_for, wait_status
from testing.keys import auth_headers
from testing.oracle import prompt_ending, unique_prompt
from testing.simulator import simulator_pace
from testing.stack import LocalStack


@pytest.fixture(scope="module")
async def secured(stack: LocalStack) -> AsyncIterator[str]:
    """A gateway on the shared stack with authentication on and small limits."""
    process, url = stack.start_extra_gateway(
        {"AUTH_ENABLED": "true", "RATE_LIMIT_PER_MINUTE": "5", "MAX_CONCURRENT_CHATS": "2"}
    )
    try:
        yield url
    finally:
        process.stop()


def _client(url: str, user: str | None = "tester") -> httpx.AsyncClient:
    headers = auth_headers(user) if user else {}
    return httpx.AsyncClient(base_url=url, timeout=30, headers=headers)


async def test_requests_without_a_valid_key_get_401(secured: str) -> None:
    async with _client(secured, None) as anonymous:
        for method, path in [
            ("POST", "/api/workflows/start"),
            ("GET", "/api/workflows/chat-x/status"),
            ("GET", "/api/workflows/chat-x/chunks"),
            ("GET", "/api/workflows/chat-x/events"),
            ("POST", "/api/workflows/chat-x/cancel"),
            ("POST", "/api/workflows/chat-x/regenerate"),
            ("POST", "/api/workflows/chat-x/edit"),
            ("POST", "/api/workflows/chat-x/continue"),
            ("GET", "/api/conversations/conv-x"),
            ("PUT", "/api/conversations/conv-x/head"),
            ("GET", "/api/stats"),
        ]:
            response = await anonymous.request(method, path, json={"prompt": "hi"})
            assert response.status_code == 401, (method, path)
            assert response.headers["www-authenticate"] == "Bearer"
        wrong = await anonymous.get(
            "/api/stats", headers={"Authorization": "Bearer not-a-key-0123456789"}
        )
        assert wrong.status_code == 401 and "not valid" in wrong.json()["detail"]
        assert (await anonymous.get("/healthz")).status_code == 200  # probes stay open


async def test_another_users_chat_is_404_everywhere(secured: str) -> None:
    async with _client(secured, "owner") as owner, _client(secured, "intruder") as intruder:
        conversation = f"conv-{unique_prompt()[-9:-1]}"
        started = await owner.post(
            "/api/workflows/start",
            json={"prompt": unique_prompt(), "max_tokens": 40, "conversation_id": conversation},
        )
        workflow_id = started.json()["workflow_id"]
        for method, path, body in [
            ("GET", f"/api/workflows/{workflow_id}/status", None),
            ("GET", f"/api/workflows/{workflow_id}/chunks", None),
            ("GET", f"/api/workflows/{workflow_id}/events", None),
            ("POST", f"/api/workflows/{workflow_id}/cancel", None),
            ("POST", f"/api/workflows/{workflow_id}/regenerate", None),
            ("POST", f"/api/workflows/{workflow_id}/edit", {"prompt": "mine now"}),
            ("POST", f"/api/workflows/{workflow_id}/continue", None),
            ("PUT", f"/api/conversations/{conversation}/head", {"workflow_id": workflow_id}),
        ]:
            response = await intruder.request(method, path, json=body)
            assert response.status_code == 404, (method, path, response.text)
        done = await wait_status(owner, workflow_id, {"completed"})
        assert done["progress"] == 100
        # a conversation is per user: another user's of the same id is empty
        theirs = (await intruder.get(f"/api/conversations/{conversation}")).json()
        assert theirs["turns"] == [] and theirs["head_id"] is None
        mine = (await owner.get(f"/api/conversations/{conversation}")).json()
        assert [t["workflow_id"] for t in mine["turns"]] == [workflow_id]
        # The same idempotency key used by two users maps to two different chats.
        body = {"prompt": unique_prompt(), "max_tokens": 20, "idempotency_key": "shared-key"}
        mine = (await owner.post("/api/workflows/start", json=body)).json()["workflow_id"]
        theirs = (await intruder.post("/api/workflows/start", json=body)).json()["workflow_id"]
        assert mine != theirs
        await wait_status(owner, mine, {"completed"})
        await wait_status(intruder, theirs, {"completed"})


async def test_per_user_rate_limit_answers_429_with_retry_after(secured: str, db) -> None:
    async def well_inside_a_minute() -> bool:  # the limit counts per clock minute
        return bool(await db.fetchval("SELECT extract(second FROM now()) < 45"))

    await wait_for(well_inside_a_minute, timeout_s=20, interval_s=0.5)
    async with _client(secured, "rate") as client:
        codes = []
        for _ in range(7):
            response = await client.post(
                "/api/workflows/start", json={"prompt": unique_prompt(), "max_tokens": 5}
            )
            codes.append(response.status_code)
            if response.status_code == 429:
                assert int(response.headers["retry-after"]) >= 1
                assert "limit" in response.json()["detail"]
        assert 429 in codes and codes[0] == 202


async def test_per_user_concurrent_chat_limit(secured: str, temporal_client, simulator) -> None:
    async def counted(expected: int) -> bool:  # running chats are counted by visibility
        query = 'ChatUserId = "busy" AND ExecutionStatus = "Running"'
        return (await temporal_client.count_workflows(query)).count == expected

    async with _client(secured, "busy") as client, simulator_pace(simulator, 100):
        running = []
        for _ in range(2):
            started = await client.post(
                "/api/workflows/start",
                json={"prompt": prompt_ending("length", 1000), "max_tokens": 1000},
            )
            assert started.status_code == 202
            running.append(started.json()["workflow_id"])
            await wait_status(client, running[-1], {"running"})
        await wait_for(lambda: counted(2), timeout_s=10)
        refused = await client.post(
            "/api/workflows/start", json={"prompt": unique_prompt(), "max_tokens": 5}
        )
        assert refused.status_code == 429
        assert "still running" in refused.json()["detail"]
        for workflow_id in running:
            await client.post(f"/api/workflows/{workflow_id}/cancel")
            await wait_status(client, workflow_id, {"cancelled", "stopped"})
