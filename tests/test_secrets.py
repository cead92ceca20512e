"""No secret (API keys, the payload encryption keys, an operator's codec credentials; a
provider key would be handled the same way) appears in the logs of any process, in
workflow inputs or results (decrypted or not), or in what the Temporal UI shows."""

from __future__ import annotations

import base64
import re

import httpx
from google.protobuf import json_format
from temporalio.client import Client

from testing.chats import wait_status
from testing.keys import TEST_API_KEYS, TEST_PAYLOAD_KEYS, test_codec
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
    # An operator reads the history through the codec endpoint, as the CLI does.
    history_payloads = await temporal_client.get_workflow_handle(workflow_id).fetch_history()
    first = history_payloads.events[0].workflow_execution_started_event_attributes.input
    decoded_by_operator = await gateway.post(
        "/codec/decode",
        content=json_format.MessageToJson(first),
        headers={"Authorization": f"Bearer {TEST_API_KEYS['operator']}"},
    )
    assert decoded_by_operator.status_code == 200

    payload_keys = [pair.split(":", 1)[1] for pair in TEST_PAYLOAD_KEYS.split(",")]
    secrets = [*TEST_API_KEYS.values(), "wrong-key-0123456789", *payload_keys]
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
    # ...and decrypted, as an operator sees them.
    codec = test_codec()
    plain_payloads: list[str] = []
    for event in (await handle.fetch_history()).events:
        for field in (
            "workflow_execution_started_event_attributes",
            "activity_task_scheduled_event_attributes",
        ):
            attributes = getattr(event, field)
            if attributes.HasField("input"):
                for payload in await codec.decode(attributes.input.payloads):
                    plain_payloads.append(payload.data.decode("utf-8", "replace"))
    assert plain_payloads, "no payload was decrypted"
    description = await handle.describe()
    shown = history + decoded + "".join(plain_payloads) + str(description.raw_description)
    for secret in secrets:
        assert secret not in shown
    assert '"tester"' in decoded  # the owner is there, as a user id only
