"""Helpers shared by the tests: expected answers, waiting, reading the chunk table."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest

from devstack.harness import ROOT, free_port
from llm_simulator.text import SimulatedReply, simulated_reply

T = TypeVar("T")


def unique_prompt(text: str = "Tell me about durable execution") -> str:
    """A prompt no other test uses, so simulator counters can be read per prompt."""
    return f"{text} [{uuid.uuid4().hex[:8]}]"


def expected_answer(
    prompt: str,
    max_tokens: int,
    temperature: float = 0.7,
    model: str = "simulator",
    history: list[dict[str, str]] | None = None,
    variant: str = "",
) -> str:
    """The simulator's answer for this request, computed without asking it."""
    reply = expected_reply(prompt, max_tokens, temperature, model, history, variant)
    return "".join(reply.tokens)


def expected_reply(
    prompt: str,
    max_tokens: int,
    temperature: float = 0.7,
    model: str = "simulator",
    history: list[dict[str, str]] | None = None,
    variant: str = "",
) -> SimulatedReply:
    """The simulator's reply for this request (tokens, finish reason, natural length);
    `variant`: as answered under `POST /sim/variant`."""
    messages = [*(history or []), {"role": "user", "content": prompt}]
    return simulated_reply(messages, model, max_tokens, temperature, variant)


def prompt_ending(finish_reason: str, max_tokens: int, text: str = "Tell me about it") -> str:
    """A unique prompt whose simulated answer (gateway defaults) ends with `finish_reason`
    ("stop": shorter than `max_tokens`; "length": cut at it)."""
    for _ in range(10_000):
        prompt = unique_prompt(text)
        if expected_reply(prompt, max_tokens).finish_reason == finish_reason:
            return prompt
    raise AssertionError(f"no prompt found that ends with {finish_reason} at {max_tokens}")


async def wait_for(
    predicate: Callable[[], Awaitable[T]], timeout_s: float = 60, interval_s: float = 0.1
) -> T:
    """Poll `predicate` until it returns a truthy value; return that value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        value = await predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(interval_s)


async def wait_status(
    gateway: httpx.AsyncClient, workflow_id: str, statuses: set[str], timeout_s: float = 60
) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        body: dict[str, Any] = (await gateway.get(f"/api/workflows/{workflow_id}/status")).json()
        return body if body.get("status") in statuses else None

    return await wait_for(reached, timeout_s=timeout_s, interval_s=0.2)


async def read_all_chunks(gateway: httpx.AsyncClient, workflow_id: str) -> list[dict[str, Any]]:
    """Follow the chunk cursor from 0 to the end, as a client would."""
    chunks: list[dict[str, Any]] = []
    cursor = 0
    while True:
        page = (
            await gateway.get(f"/api/workflows/{workflow_id}/chunks", params={"from_id": cursor})
        ).json()
        chunks.extend(page["chunks"])
        if not page["chunks"]:
            return chunks
        cursor = page["next_from_id"]


async def chunk_rows(db: asyncpg.Pool, workflow_id: str) -> list[asyncpg.Record]:
    return await db.fetch(
        """
        SELECT c.idx, c.text, c.worker, c.attempt FROM chunks c
        JOIN generations g ON g.workflow_id = c.workflow_id AND c.run_id = g.answer_run_id
        WHERE c.workflow_id = $1 ORDER BY c.idx
        """,
        workflow_id,
    )


async def generations_for(simulator: httpx.AsyncClient, prompt: str) -> dict[str, int]:
    stats = (await simulator.get("/sim/stats")).json()
    counts: dict[str, int] = stats["by_prompt"].get(prompt, {"started": 0, "completed": 0})
    return counts


HISTORIES_DIR = Path(__file__).parent / "histories"
# Histories recorded now are named `<version>-<scenario>.json`; older versions' files
# stay (see docs/upgrades.md). Bump it when a release changes the workflow's commands.
HISTORY_VERSION = "v5"


async def keep_history(handle: Any, scenario: str) -> None:
    """With UPDATE_HISTORIES=1, store this run's history as
    tests/histories/<HISTORY_VERSION>-<scenario>.json, so the replay test checks every
    later code change against it."""
    if os.environ.get("UPDATE_HISTORIES") != "1":
        return
    history = await handle.fetch_history()
    HISTORIES_DIR.mkdir(exist_ok=True)
    (HISTORIES_DIR / f"{HISTORY_VERSION}-{scenario}.json").write_text(history.to_json())


async def read_sse(
    client: httpx.AsyncClient,
    workflow_id: str,
    *,
    last_event_id: str | None = None,
    stop_after: int | None = None,
    use_query: bool = False,
) -> list[dict[str, Any]]:
    """Read the chat's SSE stream: every event as {id, event, data}, until the stream ends
    (terminal event) or `stop_after` events were read (then the connection is dropped)."""
    import json

    headers: dict[str, str] = {}
    params: dict[str, str] = {}
    if last_event_id is not None:
        if use_query:
            params["last_event_id"] = last_event_id
        else:
            headers["Last-Event-ID"] = last_event_id
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    async with client.stream(
        "GET", f"/api/workflows/{workflow_id}/events", headers=headers, params=params
    ) as response:
        assert response.status_code == 200, await response.aread()
        lines = response.aiter_lines()
        try:
            async for line in lines:
                if line == "":
                    if "event" in current:
                        current["data"] = json.loads(current.get("data", "null"))
                        events.append(current)
                        if stop_after is not None and len(events) >= stop_after:
                            break
                    current = {}
                elif not line.startswith(":"):
                    field, _, value = line.partition(":")
                    current[field] = value[1:] if value.startswith(" ") else value
        finally:
            await lines.aclose()  # close the stream now, not when the generator is collected
    return events


def preview_text(events: list[dict[str, Any]]) -> str:
    """What a viewer shows from live deltas: a `reset` drops the preview it had."""
    text = ""
    for event in events:
        if event["event"] == "reset":
            text = ""
        elif event["event"] == "delta":
            assert event["data"]["offset"] == len(text), "a delta out of place"
            text += event["data"]["text"]
    return text


def checkpointed_text(events: list[dict[str, Any]]) -> str:
    chunks = {e["data"]["index"]: e["data"]["text"] for e in events if e["event"] == "chunk"}
    assert sorted(chunks) == list(range(len(chunks)))
    return "".join(chunks[i] for i in range(len(chunks)))


async def start_chat_directly(
    temporal: Any,
    request: Any,
    user: str = "tester",
    task_queue: str = "chat-queue",
    execution_timeout: Any = None,
) -> Any:
    """Start a ChatStreamingWorkflow through Temporal, bypassing the gateway, as the
    gateway would for `user` (owner, search attributes, task timeout), so the gateway
    serves it to that user. For tests that need ChatRequest fields the API does not
    expose (tiny chunks, checkpoint window, generation mode, cache TTL)."""
    from temporalio.common import SearchAttributePair, TypedSearchAttributes

    from common import contract, search_attributes
    from workflows.chat import ChatStreamingWorkflow

    request.user_id = user
    return await temporal.start_workflow(
        ChatStreamingWorkflow.run,
        request,
        id=f"chat-test-{uuid.uuid4()}",
        task_queue=task_queue,
        task_timeout=contract.WORKFLOW_TASK_TIMEOUT,
        execution_timeout=execution_timeout,
        search_attributes=TypedSearchAttributes(
            [SearchAttributePair(search_attributes.USER, user)]
        ),
    )


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


async def start_chat(gateway: httpx.AsyncClient, **body: object) -> str:
    """Start a chat through the gateway (`POST /api/workflows/start` with `body`, which it
    must accept with 202); return its workflow id."""
    response = await gateway.post("/api/workflows/start", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["workflow_id"])


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


@contextlib.contextmanager
def own_worker(stack: Any, env: dict[str, str]) -> Iterator[str]:
    """A worker of the stack on a task queue of its own, with `env`; yields the queue.
    Stopped (by pid) on leaving, so the suite's fleet is as it was."""
    queue = f"own-{time.monotonic_ns()}"
    worker = stack.start_worker({"TASK_QUEUE": queue, **env})
    try:
        yield queue
    finally:
        worker.stop()
