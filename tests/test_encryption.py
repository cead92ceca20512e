"""Encrypted payloads (common/codec.py): the test stack runs every chat encrypted.

Stored histories hold no prompt or answer text; an operator reads them with Temporal's
own CLI through the gateway's codec endpoint; the Temporal Web UI's origin is answered
CORS; keys rotate under a running chat."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import uuid
from typing import Any

import httpx
import pytest
from temporalio.api.common.v1 import Payload
from temporalio.client import Client

from common.codec import ENCODING, KEY_ID_METADATA, EncryptionCodec, PayloadKeyError, parse_keys
from common.models import ChatRequest
from devstack.stack import temporal_cli
from testing.chats import start_chat, start_chat_directly, wait_for, wait_status
from testing.keys import TEST_API_KEYS, TEST_PAYLOAD_KEYS, auth_headers, test_codec
from testing.oracle import expected_answer, prompt_ending
from testing.simulator import simulator_pace
from testing.stack import LocalStack
from testing.workers import worker_process
from tests.conftest import TRUSTED_UI_ORIGIN


def _payloads_of(history_json: str) -> list[dict[str, Any]]:
    """Every payload object in a history's JSON (anything with metadata and data)."""
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "metadata" in node and "data" in node:
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(history_json))
    return found


async def test_stored_history_holds_no_prompt_or_answer_text(
    stack: LocalStack, gateway: httpx.AsyncClient
) -> None:
    prompt = prompt_ending("stop", 200, "A secret question")
    workflow_id = await start_chat(gateway, prompt=prompt, max_tokens=200)
    await wait_status(gateway, workflow_id, {"completed"})
    answer = expected_answer(prompt, 200)
    # A client without the keys sees what the server stores.
    plain = await Client.connect(stack.temporal_address)
    history = await plain.get_workflow_handle(workflow_id).fetch_history()
    raw = history.to_json()
    for secret in (prompt, prompt.split("[")[0].strip(), answer[:60], answer[-60:]):
        assert secret not in raw
    payloads = _payloads_of(raw)
    assert payloads
    for payload in payloads:
        metadata = {k: base64.b64decode(v) for k, v in payload["metadata"].items()}
        if metadata.get("encoding") == b"json/plain":
            # Only what the server itself writes is in clear (search attributes, markers'
            # bookkeeping); none of it is the user's text.
            text = base64.b64decode(payload["data"]).decode()
            assert prompt not in text and answer[:30] not in text
            continue
        assert metadata["encoding"] == ENCODING
        assert metadata[KEY_ID_METADATA] == b"test-1"
    # The summary shown in the Temporal UI carries no prompt words either.
    described = await plain.get_workflow_handle(workflow_id).describe()
    assert (
        described.raw_description.execution_config.user_metadata.summary.metadata["encoding"]
        == ENCODING
    )
    decoded = await test_codec().decode(
        [described.raw_description.execution_config.user_metadata.summary]
    )
    assert json.loads(decoded[0].data) == "chat · simulator"


def _clear_texts(history_json: str) -> list[str]:
    """The data of every payload of a history that is in clear (json/plain)."""
    return [
        base64.b64decode(p["data"]).decode()
        for p in _payloads_of(history_json)
        if base64.b64decode(p["metadata"].get("encoding", "")) == b"json/plain"
    ]


def _cli_show(stack: LocalStack, workflow_id: str, *codec: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            temporal_cli(),
            "workflow",
            "show",
            "--address",
            stack.temporal_address,
            "--workflow-id",
            workflow_id,
            "--output",
            "json",
            *codec,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_an_operator_reads_histories_with_temporals_cli_through_the_codec(
    stack: LocalStack, gateway: httpx.AsyncClient
) -> None:
    prompt = prompt_ending("stop", 100, "What the operator may read")
    workflow_id = await start_chat(gateway, prompt=prompt, max_tokens=100)
    await wait_status(gateway, workflow_id, {"completed"})
    endpoint = f"{stack.gateway_url}/codec"
    blind = _cli_show(stack, workflow_id)
    assert blind.returncode == 0
    assert not any(prompt in text for text in _clear_texts(blind.stdout))
    operator = _cli_show(
        stack,
        workflow_id,
        "--codec-endpoint",
        endpoint,
        "--codec-auth",
        f"Bearer {TEST_API_KEYS['operator']}",
    )
    assert operator.returncode == 0, operator.stderr
    readable = _clear_texts(operator.stdout)
    assert any(prompt in text for text in readable)  # the input, decoded
    answer = expected_answer(prompt, 100)
    assert any(answer[:40] in text for text in readable)  # the generated text
    # A user who is not an operator gets nothing decoded.
    user = _cli_show(
        stack,
        workflow_id,
        "--codec-endpoint",
        endpoint,
        "--codec-auth",
        f"Bearer {TEST_API_KEYS['tester']}",
        "--command-timeout",
        "3s",
    )
    # (the CLI takes the refusal for trouble and retries until its command timeout)
    assert user.returncode != 0 and not user.stdout, (user.returncode, user.stdout[:500])


async def test_codec_endpoint_answers_the_temporal_ui_origin_and_operators_only(
    stack: LocalStack,
) -> None:
    sealed = test_codec().encrypt(Payload(metadata={"encoding": b"json/plain"}, data=b'"hi"'))
    body = {
        "payloads": [
            {
                "metadata": {k: base64.b64encode(v).decode() for k, v in sealed.metadata.items()},
                "data": base64.b64encode(sealed.data).decode(),
            }
        ]
    }
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=10) as http:
        preflight = await http.options(
            "/codec/decode",
            headers={"Origin": TRUSTED_UI_ORIGIN, "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == TRUSTED_UI_ORIGIN
        from_ui = await http.post(
            "/codec/decode",
            json=body,
            headers={"Origin": TRUSTED_UI_ORIGIN, "X-Namespace": "default"},
        )
        assert from_ui.status_code == 200, from_ui.text
        assert from_ui.headers["access-control-allow-origin"] == TRUSTED_UI_ORIGIN
        assert base64.b64decode(from_ui.json()["payloads"][0]["data"]) == b'"hi"'
        elsewhere = await http.post(
            "/codec/decode", json=body, headers={"Origin": "http://evil.example"}
        )
        assert elsewhere.status_code == 401
        assert "access-control-allow-origin" not in elsewhere.headers
        not_operator = await http.post("/codec/decode", json=body, headers=auth_headers("tester"))
        assert not_operator.status_code == 401
        operator = await http.post("/codec/decode", json=body, headers=auth_headers("operator"))
        assert operator.status_code == 200
        garbage = await http.post(
            "/codec/decode", content=b"not json", headers=auth_headers("operator")
        )
        assert garbage.status_code == 422


async def _generating_worker(handle: Any) -> str | None:
    description = await handle.describe()
    for pending in description.raw_description.pending_activities:
        if pending.activity_type.name == "generate_full_text" and pending.state == 2:
            return str(pending.last_worker_identity) or None
    return None


async def test_a_chat_started_under_key_1_finishes_after_key_2_becomes_active(
    stack: LocalStack, temporal_client: Client, simulator: httpx.AsyncClient
) -> None:
    queue = f"rotation-{uuid.uuid4().hex[:8]}"  # its own workers: the rotation is theirs
    old = stack.start_worker({"TASK_QUEUE": queue, "PAYLOAD_ENCRYPTION_KEY_ID": "test-1"})
    new = None
    try:
        prompt = prompt_ending("length", 300, "Across a key rotation")
        async with simulator_pace(simulator, 50):  # 6 s of generation: time to rotate
            handle = await start_chat_directly(
                temporal_client, ChatRequest(prompt=prompt, max_tokens=300), task_queue=queue
            )
            generating = await wait_for(lambda: _generating_worker(handle), timeout_s=30)
            assert worker_process(stack, str(generating)) is old  # the only worker yet
            await asyncio.sleep(0.5)
            # The rotation: every worker now encrypts with test-2 (and still has test-1).
            new = stack.start_worker({"TASK_QUEUE": queue, "PAYLOAD_ENCRYPTION_KEY_ID": "test-2"})
            old.kill()
            result = await handle.result()
        assert result.total_chunks > 0
        key_ids = {
            base64.b64decode(p["metadata"][KEY_ID_METADATA])
            for p in _payloads_of((await handle.fetch_history()).to_json())
            if KEY_ID_METADATA in p["metadata"]
        }
        assert key_ids == {b"test-1", b"test-2"}
    finally:
        old.stop()
        if new is not None:
            new.stop()


def test_codec_round_trip_rotation_and_tampering() -> None:
    keys = parse_keys(TEST_PAYLOAD_KEYS)
    original = Payload(metadata={"encoding": b"json/plain"}, data=b'{"prompt": "secret"}')
    one = EncryptionCodec(keys, "test-1")
    sealed = one.encrypt(original)
    assert b"secret" not in sealed.data and sealed.metadata[KEY_ID_METADATA] == b"test-1"
    assert one.encrypt(original).data != sealed.data  # a fresh nonce every time
    two = EncryptionCodec(keys, "test-2")
    assert two.decrypt(sealed) == original  # an old payload opens after the rotation
    assert two.decrypt(original) == original  # a clear (older) payload passes through
    only_two = EncryptionCodec({"test-2": keys["test-2"]}, "test-2")
    with pytest.raises(PayloadKeyError, match="test-1"):
        only_two.decrypt(sealed)
    tampered = Payload(metadata=sealed.metadata, data=sealed.data[:-1] + b"x")
    with pytest.raises(PayloadKeyError):
        one.decrypt(tampered)
    for bad in ("k1", "k1:short", "k1:" + "!" * 44, ":" + base64.b64encode(b"x" * 32).decode()):
        with pytest.raises(ValueError, match="PAYLOAD_ENCRYPTION_KEYS"):
            parse_keys(bad)
