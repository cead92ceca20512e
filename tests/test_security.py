"""Nothing exposed by default: listeners on 127.0.0.1, /metrics behind a key when one is
set, /readyz without internal error text, API keys looked up by hash, and an answer
cache that tells no user about another's chats (CACHE_SCOPE)."""

from __future__ import annotations

import time
import uuid

import httpx
import psutil

from api.auth import key_digest, parse_api_keys
from testing.chats import generations_for, start_chat, wait_for, wait_status
from testing.keys import auth_headers
from testing.oracle import prompt_ending
from testing.stack import LocalStack, free_port
from ui.assertions import HEADER, user_assertion


def _client(url: str, user: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, timeout=30, headers=auth_headers(user))


def test_api_keys_are_kept_by_digest_only() -> None:
    keys = parse_api_keys("alice:alice-key-0123456789,bob:bob-key-0123456789ab")
    assert keys == {
        key_digest("alice-key-0123456789"): "alice",
        key_digest("bob-key-0123456789ab"): "bob",
    }
    assert all(isinstance(k, bytes) and len(k) == 32 for k in keys)


async def test_readyz_names_the_dependency_without_internal_text(fleet: LocalStack) -> None:
    closed = f"127.0.0.1:{free_port()}"
    process, url = fleet.start_extra_gateway({"TEMPORAL_ADDRESS": closed}, ready_path="/healthz")
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"] == {"temporal": "unavailable", "postgres": "ok"}
        assert closed not in ready.text
        assert "readiness: Temporal unavailable" in process.log_tail(200)  # the why: logged
    finally:
        process.stop()


async def test_metrics_can_require_a_key(fleet: LocalStack) -> None:
    process, url = fleet.start_extra_gateway({"METRICS_API_KEY": "metrics-key-0123456789"})
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            assert (await http.get("/metrics")).status_code == 401
            wrong = await http.get("/metrics", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            right = await http.get(
                "/metrics", headers={"Authorization": "Bearer metrics-key-0123456789"}
            )
            assert right.status_code == 200 and "durable_chat_gateway" in right.text
    finally:
        process.stop()


def test_worker_metrics_listen_on_loopback_only(fleet: LocalStack) -> None:
    port = free_port()
    worker = fleet.start_worker(
        {"WORKER_METRICS_PORT": str(port), "TASK_QUEUE": f"metrics-{uuid.uuid4().hex[:6]}"}
    )
    try:

        def listening() -> list[str] | None:
            found = [
                c.laddr.ip
                for c in psutil.Process(worker.pid).net_connections("tcp")
                if c.status == psutil.CONN_LISTEN and c.laddr.port == port
            ]
            return found or None

        deadline = time.monotonic() + 30
        addresses = None
        while addresses is None and time.monotonic() < deadline:
            addresses = listening()
            time.sleep(0.2)
        assert addresses == ["127.0.0.1"]
        assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).status_code == 200
    finally:
        worker.stop()


async def test_global_cache_never_names_another_users_chat(
    gateway: httpx.AsyncClient, fleet: LocalStack, simulator: httpx.AsyncClient
) -> None:
    prompt = prompt_ending("stop", 100, "Shared question")
    first = await start_chat(gateway, prompt=prompt, max_tokens=100)
    await wait_status(gateway, first, {"completed"})
    mine = await start_chat(gateway, prompt=prompt, max_tokens=100)
    async with _client(fleet.gateway_url, "other") as other:
        theirs = await start_chat(other, prompt=prompt, max_tokens=100)
        their_status = await wait_status(other, theirs, {"completed"})
    my_status = await wait_status(gateway, mine, {"completed"})
    assert my_status["cache_hit"] and my_status["cached_from"] == first  # my own chat
    assert their_status["cache_hit"] and their_status["cached_from"] is None  # not mine
    assert (await generations_for(simulator, prompt))["started"] == 1


async def test_user_scoped_cache_shares_nothing_between_users(
    fleet: LocalStack, simulator: httpx.AsyncClient
) -> None:
    queue = f"cache-user-{uuid.uuid4().hex[:6]}"
    worker = fleet.start_worker({"TASK_QUEUE": queue, "CACHE_SCOPE": "user"})
    process, url = fleet.start_extra_gateway({"TASK_QUEUE": queue})
    try:
        prompt = prompt_ending("stop", 100, "A question per user")
        async with _client(url, "tester") as tester, _client(url, "other") as other:
            first = await start_chat(tester, prompt=prompt, max_tokens=100)
            await wait_status(tester, first, {"completed"})
            theirs = await start_chat(other, prompt=prompt, max_tokens=100)
            assert not (await wait_status(other, theirs, {"completed"}))["cache_hit"]
            again = await start_chat(tester, prompt=prompt, max_tokens=100)
            assert (await wait_status(tester, again, {"completed"}))["cache_hit"]

        async def two() -> bool:
            return (await generations_for(simulator, prompt))["started"] == 2

        assert await wait_for(two, timeout_s=10)
    finally:
        process.stop()
        worker.stop()


async def test_only_the_ui_key_may_act_for_a_user_with_a_valid_assertion(
    fleet: LocalStack,
) -> None:
    secret = b"assertion-secret-for-this-test-0123"
    process, url = fleet.start_extra_gateway(
        {"USER_ASSERTION_SECRET": secret.decode(), "UI_SERVICE_USERS": "ui"}
    )
    try:
        good = {HEADER: user_assertion("alice@example", secret)}
        async with _client(url, "ui") as ui, _client(url, "tester") as tester:
            started = await ui.post(
                "/api/workflows/start", json={"prompt": "hi", "max_tokens": 5}, headers=good
            )
            assert started.status_code == 202, started.text
            workflow_id = started.json()["workflow_id"]
            # The chat is alice's: the UI's key alone does not see it, alice through it does.
            assert (await ui.get(f"/api/workflows/{workflow_id}/status")).status_code == 404
            mine = await ui.get(f"/api/workflows/{workflow_id}/status", headers=good)
            assert mine.status_code == 200
            refused = {
                "another key": (tester, good),
                "forged": (ui, {HEADER: user_assertion("alice@example", b"wrong-secret")}),
                "expired": (ui, {HEADER: user_assertion("alice@example", secret, now=0)}),
                "malformed": (ui, {HEADER: "v1.nope"}),
            }
            for why, (client, headers) in refused.items():
                answer = await client.get("/api/stats", headers=headers)
                assert answer.status_code == 401, (why, answer.text)
    finally:
        process.stop()
