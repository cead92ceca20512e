"""Connecting to Temporal, patiently: the server may still be starting."""

from __future__ import annotations

import asyncio

import structlog
from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.runtime import Runtime

log = structlog.get_logger(__name__)


async def connect_temporal(
    address: str,
    namespace: str,
    *,
    runtime: Runtime | None = None,
    data_converter: DataConverter = DataConverter.default,
    attempts: int = 120,
    delay_s: float = 0.5,
) -> Client:
    """Connect to the Temporal frontend at `address`, retrying while it is not up yet."""
    for attempt in range(1, attempts + 1):
        try:
            return await Client.connect(
                address, namespace=namespace, runtime=runtime, data_converter=data_converter
            )
        except RuntimeError as exc:
            if attempt == attempts:
                raise
            if attempt == 1 or attempt % 10 == 0:
                log.info("waiting for Temporal", address=address, error=str(exc), attempt=attempt)
            await asyncio.sleep(delay_s)
    raise AssertionError("unreachable")
