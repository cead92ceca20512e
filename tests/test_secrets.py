"""No secret (API keys; a provider key would be handled the same way) appears in the
logs of any process, in workflow inputs or results, or in what the Temporal UI shows."""

from __future__ import annotations

import base64
import re

import httpx
from temporalio.client import Client

from testing.chats import wait_status
from testing.keys import TEST_API_KEYS
from testing.oracle import unique_prompt
from testing.stack import LocalStack


async def test_api_keys_never_reach_logs_or_histories(
    stack: LocalStack, gateway: httpx.AsyncClient, temporal_client: Client
) -> None:
    started = await gateway.post(
        "/api/workflows/start", json={"prompt": unique_prompt(), "max_tokens": 30}
    )
    workflow_id = started.json()["workflow_id"]
    await wait_status(gateway, workflow_id, {"completed"})
    await gateway.get("/api/stats", headers={"Authorization": "Bearer wrong-key-0123456789"})

    secrets = [*TEST_API_KEYS.values(), "wrong-key-0123456789"]
    for process in stack.processes:
        text = process.log_path.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, f"a key appears in the {process.name} log"
    handle = temporal_client.get_workflow_handle(workflow_id)
    history = (await handle.fetch_history()).to_json()
    # Payloads (inputs, results, heartbeats, search attributes) are base64 in the JSON.
    decoded = "".join(
        base64.b64decode(data).decode("utf-8", "replace")
        for data in re.findall(r'"data": "([A-Za-z0-9+/=]+)"', history)
    )
    description = await handle.describe()
    shown = history + decoded + str(description.raw_description)
    for secret in secrets:
        assert secret not in shown
    assert '"tester"' in decoded  # the owner is there, as a user id only
