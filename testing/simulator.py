"""The LLM simulator under test: its controls (faults, pace, variant) and a private one."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from testing.stack import ROOT, free_port


@dataclass(frozen=True)
class RunningSimulator:
    """An LLM simulator process started by :func:`running_simulator`."""

    url: str
    process: subprocess.Popen[bytes]


@contextlib.contextmanager
def running_simulator(log_path: Path, **sim_env: str) -> Iterator[RunningSimulator]:
    """Start ``python -m llm_simulator`` on a free port and wait until /healthz answers;
    stop it by pid after (SIGTERM, then SIGKILL if it is not gone within 5 s).

    The simulator is fast (TTFT 20 ms, 2000 tokens/s) unless ``sim_env`` says otherwise.
    ``SIM_*`` variables of the test run's own environment are not passed on, only ``sim_env``.
    For the tests of the simulator itself; other tests use the session stack's simulator.
    """
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SIM_")},
        "SIM_HOST": "127.0.0.1",
        "SIM_PORT": str(port),
        "SIM_TTFT_MS": "20",
        "SIM_TOKENS_PER_SECOND": "2000",
        **sim_env,
    }
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "llm_simulator"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"simulator exited early:\n{log_path.read_text()}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"simulator did not become healthy:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield RunningSimulator(url=url, process=process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@contextlib.asynccontextmanager
async def simulator_fault(simulator: httpx.AsyncClient, **fault: object) -> AsyncIterator[None]:
    """Inside the block the simulator injects `fault` (`POST /sim/faults`, e.g.
    `fault="http_500", count=2`); on leaving it every armed fault is cleared. A fault the
    simulator refuses fails the test at once (a test must not pass without its fault)."""
    (await simulator.post("/sim/faults", json=fault)).raise_for_status()
    try:
        yield
    finally:
        await simulator.delete("/sim/faults")


@contextlib.asynccontextmanager
async def simulator_variant(simulator: httpx.AsyncClient, variant: str) -> AsyncIterator[None]:
    """Inside the block the simulator answers new requests with another reply than usual
    (`POST /sim/variant`), as a real model sampling again would."""
    (await simulator.post("/sim/variant", json={"variant": variant})).raise_for_status()
    try:
        yield
    finally:
        await simulator.delete("/sim/variant")


@contextlib.asynccontextmanager
async def simulator_pace(
    simulator: httpx.AsyncClient, tokens_per_second: float
) -> AsyncIterator[None]:
    """Inside the block the simulator produces new generations at `tokens_per_second`
    (`POST /sim/pace`): a long generation for a test that kills workers during one."""
    (
        await simulator.post("/sim/pace", json={"tokens_per_second": tokens_per_second})
    ).raise_for_status()
    try:
        yield
    finally:
        await simulator.delete("/sim/pace")
