"""/v1/chat/completions and /v1/models, for clients that only speak Chat Completions.

A completion is a durable chat like a response (and readable as one: the
`X-Durable-Chat-Response-Id` header names it for `GET /v1/responses/{id}` when it was
created with `store: true`). The protocol itself cannot resume a stream; the
generation goes on whatever happens to the connection.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse

from api import chats
from api.auth import CurrentUser
from api.errors import openai_error_body
from api.routes.responses import SSE_HEADERS, IdempotencyKey, v1_of
from api.schemas import JSON_OR_SSE, V1_ERROR_RESPONSES
from api.v1 import service
from api.v1.objects import (
    chat_completion,
    completion_chunk,
    outcome_of,
    usage_of,
)
from api.v1.requests import (
    Asked,
    ChatCompletionBody,
    allowed_models,
    generation_bounds,
    join_system,
    request_hash,
    split_messages,
    unsupported,
)
from api.v1.stream import Ended, TextDelta
from common.errors import ChatNotFoundError, InvalidRequestError
from storage import ResponseRow

router = APIRouter(prefix="/v1", tags=["openai-compatible"], responses=V1_ERROR_RESPONSES)


def _asked(request: Request, body: ChatCompletionBody) -> Asked:
    unsupported(body, accepted=set())
    settings = request.app.state.settings
    model = chats.check_model(settings, body.model)
    if body.stream_options is not None and not body.stream:
        raise InvalidRequestError(
            "stream_options is only allowed with stream=true.", param="stream_options"
        )
    system, history, prompt = split_messages(body.messages, "messages", (None,))
    max_tokens, temperature = generation_bounds(
        settings,
        body.max_completion_tokens or body.max_tokens,
        body.temperature,
        "max_completion_tokens" if body.max_completion_tokens else "max_tokens",
    )
    return Asked(
        prompt=prompt,
        history=history,
        system_prompt=join_system(list(system)),
        model=model,
        max_tokens=max_tokens,
        temperature=temperature,
        params={
            "model": model,
            "instructions": None,
            "max_output_tokens": body.max_completion_tokens or body.max_tokens,
            "temperature": temperature,
            "metadata": body.metadata or {},
            "previous_response_id": None,
            "user": (body.model_extra or {}).get("user"),
        },
    )


@router.post("/chat/completions", response_model=None, responses=JSON_OR_SSE)
async def create_chat_completion(
    body: ChatCompletionBody,
    request: Request,
    user: CurrentUser,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse | EventSourceResponse:
    v1 = v1_of(request)
    row = await service.create(
        v1,
        user,
        _asked(request, body),
        api="chat.completions",
        background=False,
        stored=body.store,
        fingerprint=request_hash(body),
        idempotency_key=idempotency_key,
    )
    headers = {
        "X-Durable-Chat-Workflow-Id": row.workflow_id,
        "X-Durable-Chat-Response-Id": row.response_id,
    }
    created = int(row.created_at.timestamp())
    model = row.params["model"]
    if body.stream:
        chunks = _chunks(v1, row, created, model, body.include_usage)
        return EventSourceResponse(chunks, ping=15, headers={**SSE_HEADERS, **headers})
    status, text = await service.wait_for_end(v1, row)
    outcome = outcome_of(status)
    if not outcome.answered:
        error = outcome.error or {"code": "cancelled", "message": "The chat was cancelled."}
        code = 400 if error["code"] == "invalid_prompt" else 500
        kind = "invalid_request_error" if code == 400 else "server_error"
        return JSONResponse(
            openai_error_body(error["message"], kind, error["code"]),
            status_code=code,
            headers=headers,
        )
    assert outcome.finish_reason is not None
    return JSONResponse(
        chat_completion(
            row.workflow_id, created, model, text, outcome.finish_reason, usage_of(status)
        ),
        headers=headers,
    )


async def _chunks(
    v1: service.V1, row: ResponseRow, created: int, model: str, include_usage: bool
) -> AsyncIterator[dict[str, str]]:
    """`data:` frames as OpenAI sends them: a role chunk, content chunks, a finish chunk,
    the usage chunk when asked, then `[DONE]`; an error object when the chat failed."""

    def frame(delta: dict[str, Any] | None, **fields: Any) -> dict[str, str]:
        chunk = completion_chunk(row.workflow_id, created, model, delta, **fields)
        return {"data": json.dumps(chunk, ensure_ascii=False)}

    yield frame({"role": "assistant", "content": ""})
    async for step in service.answer_text(v1, row):
        if isinstance(step, TextDelta):
            yield frame({"content": step.text})
        elif isinstance(step, Ended):
            status = await service.record_status(v1, row)
            assert status is not None
            outcome = outcome_of(status)
            if not outcome.answered:
                error = outcome.error or {"code": "cancelled", "message": "Cancelled."}
                body = openai_error_body(error["message"], "server_error", error["code"])
                yield {"data": json.dumps(body, ensure_ascii=False)}
                return
            yield frame({}, finish_reason=outcome.finish_reason)
            if include_usage:
                yield frame(None, usage=usage_of(status) or (0, 0))
            yield {"data": "[DONE]"}
            return


@router.get("/models")
async def list_models(request: Request, user: CurrentUser) -> dict[str, Any]:
    """The models this deployment serves (`openai.types.Model`)."""
    return {
        "object": "list",
        "data": [_model(m) for m in allowed_models(request.app.state.settings)],
    }


@router.get("/models/{model_id:path}")
async def retrieve_model(
    model_id: Annotated[str, Path(max_length=200)], request: Request, user: CurrentUser
) -> dict[str, Any]:
    if model_id not in allowed_models(request.app.state.settings):
        raise ChatNotFoundError(
            model_id, f"The model '{model_id[:80]}' does not exist.", code="model_not_found"
        )
    return _model(model_id)


def _model(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "durable-chat"}
