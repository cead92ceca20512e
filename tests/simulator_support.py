"""Helpers for the simulator's own tests: raw SSE reading of its OpenAI streams, and strict
validation against the ``openai`` SDK's types (no unknown fields anywhere). What the
simulator answers is computed by testing.oracle."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from typing import Any, TypeVar

import httpx
import pydantic
from httpx_sse import ServerSentEvent, aconnect_sse
from openai import BaseModel as OpenAIModel
from openai.types.responses import ResponseStreamEvent

M = TypeVar("M", bound=pydantic.BaseModel)

RESPONSE_EVENT = pydantic.TypeAdapter(ResponseStreamEvent)

#: Events that open a Responses stream before its first delta.
FOREGROUND_PREAMBLE = (
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
)
BACKGROUND_PREAMBLE = (
    "response.created",
    "response.queued",
    *FOREGROUND_PREAMBLE[1:],
)
#: Events that close the message item before ``response.completed`` / ``response.incomplete``.
ITEM_DONE = ("response.output_text.done", "response.content_part.done", "response.output_item.done")


def responses_event_types(
    *, background: bool, deltas: int, end: str, error_after: int | None = None
) -> list[str]:
    """The documented order of a Responses stream that ends as ``end`` (completed,
    incomplete, failed, cancelled) after ``deltas`` deltas, with an ``error`` event after
    ``error_after`` of them."""
    types = list(BACKGROUND_PREAMBLE if background else FOREGROUND_PREAMBLE)
    delta_types = ["response.output_text.delta"] * deltas
    if error_after is not None:
        delta_types.insert(min(error_after, deltas), "error")
    types += delta_types
    if end in ("completed", "incomplete"):
        types += ITEM_DONE
    types.append(
        {"completed": "response.completed", "incomplete": "response.incomplete"}.get(
            end, "response.failed"
        )
    )
    return types


def assert_no_extra_fields(value: Any, path: str = "$") -> None:
    """Fail if any pydantic model inside ``value`` holds fields its class does not declare."""
    if isinstance(value, pydantic.BaseModel):
        assert not value.model_extra, f"unknown fields at {path}: {sorted(value.model_extra)}"
        for name in type(value).model_fields:
            assert_no_extra_fields(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            assert_no_extra_fields(item, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            assert_no_extra_fields(item, f"{path}.{key}")


def strict(model: type[M], data: Any) -> M:
    """``data`` validated as ``model`` with no unknown field anywhere."""
    parsed = model.model_validate(data)
    assert_no_extra_fields(parsed)
    return parsed


def strict_event(data: dict[str, Any]) -> Any:
    """A raw Responses stream event validated as the SDK's ``ResponseStreamEvent`` union (the
    class its ``type`` names), with no unknown field anywhere."""
    event = RESPONSE_EVENT.validate_python(data)
    assert isinstance(event, OpenAIModel)
    assert event.type == data["type"]  # type: ignore[attr-defined]
    assert_no_extra_fields(event)
    return event


async def read_sse(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    idle_timeout: float | None = None,
    **kwargs: Any,
) -> tuple[httpx.Response, list[ServerSentEvent], bool]:
    """Read a whole event stream: the response, its events, and whether it ended cleanly
    (``False`` if the connection was cut, or nothing came for ``idle_timeout`` seconds)."""
    events: list[ServerSentEvent] = []
    async with aconnect_sse(http, method, url, **kwargs) as source:
        response = source.response
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            await response.aread()
            return response, events, True
        iterator = source.aiter_sse().__aiter__()
        try:
            while True:
                events.append(await asyncio.wait_for(iterator.__anext__(), idle_timeout))
        except StopAsyncIteration:
            return response, events, True
        except (httpx.RemoteProtocolError, httpx.ReadError, TimeoutError):
            return response, events, False


def sse_json(events: Iterable[ServerSentEvent]) -> list[dict[str, Any]]:
    """The JSON payloads of ``events`` (the ``[DONE]`` sentinel excluded); each SSE ``event:``
    name, when present, must equal the payload's ``type``."""
    payloads = []
    for event in events:
        if event.data == "[DONE]":
            continue
        data = json.loads(event.data)
        if event.event != "message":
            assert event.event == data["type"]
        payloads.append(data)
    return payloads


async def stats(sim: httpx.AsyncClient) -> dict[str, Any]:
    response = await sim.get("/sim/stats")
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


async def prompt_stats(sim: httpx.AsyncClient, prompt: str) -> dict[str, int] | None:
    by_prompt: dict[str, dict[str, int]] = (await stats(sim))["by_prompt"]
    return by_prompt.get(prompt)
