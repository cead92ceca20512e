"""Targeted bad input: every case gets a clear 4xx, never a 5xx or a hang."""

from __future__ import annotations

import httpx
import pytest

START = "/api/workflows/start"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", 422),
        (b"   ", 422),
        (b"\xff\xfe\x00not utf-8", 422),
        (b'{"prompt": "\\u0000"}', 422),
        (b'{"prompt": "hello\\u0007"}', 422),
        (b'{"prompt": "   \\n\\t  "}', 422),
        (b'{"prompt": ["a list"]}', 422),
        (b'{"prompt": {"an": "object"}}', 422),
        (b'{"prompt": null}', 422),
        (b'{"prompt": "ok", "max_tokens": "ten"}', 422),
        (b'{"prompt": "ok", "max_tokens": 0}', 422),
        (b'{"prompt": "ok", "max_tokens": -5}', 422),
        (b'{"prompt": "ok", "temperature": "hot"}', 422),
        (b'{"prompt": "ok", "cache": "maybe"}', 422),
        (b'{"prompt": "ok", "conversation_id": "../../etc/passwd"}', 422),
        (b'{"prompt": "ok", "idempotency_key": ""}', 422),
        (b"[1, 2, 3]", 422),
        (b'"just a string"', 422),
    ],
)
async def test_malformed_start_bodies(
    gateway: httpx.AsyncClient, body: bytes, expected: int
) -> None:
    response = await gateway.post(START, content=body, headers={"content-type": "application/json"})
    assert response.status_code == expected, response.text
    assert response.json()["detail"]


async def test_huge_bodies_are_refused_with_413(gateway: httpx.AsyncClient) -> None:
    big_prompt = await gateway.post(START, json={"prompt": "x" * 33_000})
    assert big_prompt.status_code == 413 and "limit" in big_prompt.json()["detail"]
    huge_body = await gateway.post(
        START, content=b'{"prompt": "' + b"y" * 5_000_000 + b'"}',
        headers={"content-type": "application/json"},
    )  # fmt: skip
    assert huge_body.status_code == 413


@pytest.mark.parametrize(
    "workflow_id",
    ["chat-00000000-0000-0000-0000-000000000000", "nope", "x" * 200],
)
async def test_unknown_ids_are_404(gateway: httpx.AsyncClient, workflow_id: str) -> None:
    for method, suffix in [
        ("GET", "status"),
        ("GET", "chunks"),
        ("GET", "events"),
        ("POST", "cancel"),
    ]:
        response = await gateway.request(method, f"/api/workflows/{workflow_id}/{suffix}")
        assert response.status_code == 404, (method, suffix)


@pytest.mark.parametrize("workflow_id", ["x" * 201, "a b", "semi;colon", "%00", "é"])
async def test_malformed_ids_are_422(gateway: httpx.AsyncClient, workflow_id: str) -> None:
    response = await gateway.get(f"/api/workflows/{workflow_id}/status")
    assert response.status_code == 422, response.text
