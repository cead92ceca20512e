"""Session fixtures: one real stack (PostgreSQL, Temporal dev server, LLM simulator,
two workers, gateway) on free ports, started once and stopped by pid at the end."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from temporalio.client import Client

from common.codec import data_converter
from testing.keys import TEST_PAYLOAD_KEYS, auth_headers, test_codec
from testing.stack import LocalStack, started

# Fast simulator for the suite: 20 ms to the first token, 1000 tokens per second.
SIMULATOR_ENV = {"SIM_TTFT_MS": "20", "SIM_TOKENS_PER_SECOND": "1000"}
# Provider bounds short enough for tests (the defaults are minutes): an outage fails a
# chat after 8 s of retries, a stream quiet for 5 s is broken, a response queued for 3 s
# is given up.
# The origin a Temporal Web UI would call the codec endpoint from (tests/test_encryption.py).
TRUSTED_UI_ORIGIN = "http://localhost:8233"
APP_ENV = {
    # A second allowed (and priced) model, for the tests of what a model change does.
    "ALLOWED_MODELS": "simulator,other-model",
    # Every payload of the suite's chats is encrypted (docs/security.md).
    "PAYLOAD_ENCRYPTION_KEYS": TEST_PAYLOAD_KEYS,
    "PAYLOAD_ENCRYPTION_KEY_ID": "test-1",
    "OPERATOR_USERS": "operator",
    "CODEC_TRUSTED_ORIGINS": TRUSTED_UI_ORIGIN,
    "LLM_PRICES": '{"other-model": {"input": 0.15, "output": 0.6}}',
    "LLM_OUTAGE_TOLERANCE_S": "8",
    "LLM_STREAM_IDLE_TIMEOUT_S": "5",
    "LLM_QUEUED_TIMEOUT_S": "3",
}
FLEET_SIZE = 2


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    workdir = Path(tmp_path_factory.mktemp("stack"))
    local = LocalStack(workdir=workdir, simulator_env=SIMULATOR_ENV, app_env=APP_ENV)
    with started(local, workers=FLEET_SIZE):
        yield local


@pytest.fixture
def fleet(stack: LocalStack) -> LocalStack:
    """The stack with FLEET_SIZE live workers (a test before may have killed some)."""
    while len(stack.live_workers()) < FLEET_SIZE:
        stack.start_worker()
    return stack


@pytest.fixture(scope="session")
async def temporal_client(stack: LocalStack) -> Client:
    """A client that encrypts and decrypts with the stack's keys, as its processes do."""
    return await Client.connect(stack.temporal_address, data_converter=data_converter(test_codec()))


@pytest.fixture(scope="session")
async def db(stack: LocalStack) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture
async def gateway(fleet: LocalStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=fleet.gateway_url, timeout=30, headers=auth_headers()
    ) as client:
        yield client


@pytest.fixture(scope="session")
async def simulator(stack: LocalStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.simulator_url, timeout=30) as client:
        yield client


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("SKIP_BROWSER_TESTS") == "1":
        skip = pytest.mark.skip(reason="SKIP_BROWSER_TESTS=1")
        for item in items:
            if item.get_closest_marker("browser") is not None:
                item.add_marker(skip)
