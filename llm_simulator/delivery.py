"""ASGI responses that deliver a running generation to one attached HTTP client.

Chat completions follow the chat lifecycle: the generation belongs to the request, so a client
that goes away cancels it (it then counts as started but never completed). Responses API
deliveries do the same for a response created without ``background``; a background response
belongs to the server, so a client that goes away only stops reading it and may re-attach.

Every delivery can also suffer a :class:`~llm_simulator.faults.ConnectionFault` after its
``after_tokens``-th token (after the last one when the reply is shorter): ``disconnect``
returns from the ASGI call without finishing the response body, which makes the server
(uvicorn) close the TCP connection mid-response, so the client sees a truncated body rather
than a clean end; ``stall`` sends nothing for ``stall_s`` seconds and then goes on;
``error_event`` (Responses API streams) ends the body cleanly after the response's ``error``
event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import structlog
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from llm_simulator.engine import Generation, GenerationEngine, GenerationStatus
from llm_simulator.faults import ConnectionFault, error_message
from llm_simulator.protocol import ApiError, ChunkEncoder, chat_completion
from llm_simulator.response_log import ResponseRecord, encode_event
from llm_simulator.settings import FaultKind

logger = structlog.get_logger(__name__)


_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
#: Events of a Responses stream that come after the last delta.
_TAIL_EVENT_TYPES = frozenset(
    {
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
        "response.incomplete",
        "response.failed",
    }
)


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _send_json(send: Send, payload: dict[str, Any], status: int = 200) -> None:
    """Send ``payload`` as the whole ``application/json`` response."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _send_body(send: Send, body: bytes, *, more: bool = True) -> None:
    if body or not more:
        await send({"type": "http.response.body", "body": body, "more_body": more})


def _provider_error(generation: Generation) -> ApiError:
    """The error a failed generation surfaces as."""
    code = generation.plan.error_code or "server_error"
    return ApiError.provider_failure(code, error_message(code))


class _AttachedGenerationResponse(Response):
    """Runs :meth:`_deliver` while watching for the client to disconnect.

    Contract for subclasses: :meth:`_deliver` returns ``True`` when it completed the response
    (sent ``more_body=False``) and ``False`` when the connection must be cut. A client that
    disconnects cancels the delivery; the connection being cut or lost also cancels the
    generation unless ``cancel_on_detach`` is false (background responses).
    """

    def __init__(
        self,
        *,
        generation: Generation,
        fault: ConnectionFault | None,
        cancel_on_detach: bool = True,
    ) -> None:
        # Headers are sent by _deliver; Response.__init__ is skipped on purpose so that no
        # Content-Length is computed for a body that does not exist yet.
        self.status_code = 200
        self.background = None
        self.raw_headers = []
        self.generation = generation
        self.fault = fault
        self.cancel_on_detach = cancel_on_detach
        self._fault_pending = fault is not None and fault.kind is not FaultKind.ERROR_EVENT

    async def _deliver(self, send: Send) -> bool:
        raise NotImplementedError

    def _detach(self) -> None:
        if self.cancel_on_detach:
            self.generation.cancel()

    async def _fire_fault(self) -> bool:
        """Apply the pending disconnect/stall fault now; ``True`` means: cut the connection."""
        fault = self.fault
        self._fault_pending = False
        assert fault is not None
        if fault.kind is FaultKind.DISCONNECT:
            return True
        logger.info("sim.connection.stalled", generation_id=self.generation.id, s=fault.stall_s)
        await asyncio.sleep(fault.stall_s)
        return False

    def _fault_due(self, tokens_sent: int) -> bool:
        return (
            self._fault_pending
            and self.fault is not None
            and tokens_sent >= self.fault.after_tokens
        )

    async def _send_truncated_json(self, send: Send, object_id: str) -> None:
        """For a disconnect fault: once ``after_tokens`` tokens were produced, send the status
        line, the headers and the first bytes of a JSON body naming ``object_id``, and no more."""
        assert self.fault is not None
        generation, cut_after = self.generation, self.fault.after_tokens
        if generation.produced < cut_after:
            async with contextlib.aclosing(generation.follow()) as batches:
                async for _ in batches:
                    if generation.produced >= cut_after:
                        break
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        partial = b'{"id":' + json.dumps(object_id).encode()
        await send({"type": "http.response.body", "body": partial, "more_body": True})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        deliver = asyncio.ensure_future(self._deliver(send))
        watch = asyncio.ensure_future(_wait_for_disconnect(receive))
        try:
            await asyncio.wait({deliver, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not deliver.done():
                deliver.cancel()
            watch.cancel()
            await asyncio.wait({deliver, watch})  # never raises the tasks' own errors
        error = None if deliver.cancelled() else deliver.exception()
        if deliver.cancelled() or isinstance(error, OSError):
            # Cancelled by the disconnect watcher, or the server refused to write (ASGI 2.4).
            self._detach()
            logger.info(
                "sim.client.disconnected",
                generation_id=self.generation.id,
                tokens_produced=self.generation.produced,
                generation_cancelled=self.cancel_on_detach,
            )
            return
        if error is not None:
            self._detach()
            raise error
        if not deliver.result():
            self._detach()
            logger.warning(
                "sim.connection.cut",
                generation_id=self.generation.id,
                tokens_produced=self.generation.produced,
                reason="fault" if self.fault is not None else self.generation.status.value,
                generation_cancelled=self.cancel_on_detach,
            )


class _ChatCompletionResponse(_AttachedGenerationResponse):
    """A chat completion delivery: the generation is cancelled when the client goes away."""

    def __init__(
        self,
        *,
        generation: Generation,
        engine: GenerationEngine,
        prompt_tokens: int,
        fault: ConnectionFault | None,
    ) -> None:
        super().__init__(generation=generation, fault=fault)
        self.engine = engine
        self.prompt_tokens = prompt_tokens

    @property
    def completion_id(self) -> str:
        """The ``id`` of the chat completion, derived from the generation id."""
        return "chatcmpl-" + self.generation.id.removeprefix("gen_")


class ChatCompletionStreamResponse(_ChatCompletionResponse):
    """``text/event-stream`` of ``chat.completion.chunk`` events for one generation.

    Sends the role chunk at once, then one chunk per token as tokens are produced, then (once
    every token was sent, and only then, a finished generation counts as completed) the finish
    chunk (``stop``, ``length`` or ``content_filter``), the usage chunk if requested, and
    ``data: [DONE]``. A failed generation ends with an error chunk instead.
    """

    def __init__(
        self,
        *,
        generation: Generation,
        engine: GenerationEngine,
        prompt_tokens: int,
        include_usage: bool,
        fault: ConnectionFault | None = None,
    ) -> None:
        super().__init__(
            generation=generation, engine=engine, prompt_tokens=prompt_tokens, fault=fault
        )
        self.encoder = ChunkEncoder(
            completion_id=self.completion_id,
            created=generation.created_at,
            model=generation.request.model,
            include_usage=include_usage,
        )
        self.include_usage = include_usage

    async def _deliver(self, send: Send) -> bool:
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        await _send_body(send, self.encoder.role_event())
        sent = 0
        if self._fault_due(sent) and await self._fire_fault():
            return False
        async with contextlib.aclosing(self.generation.follow()) as batches:
            async for batch in batches:
                body = b""
                for token in batch:
                    body += self.encoder.token_event(token)
                    sent += 1
                    if self._fault_due(sent):
                        await _send_body(send, body)
                        body = b""
                        if await self._fire_fault():
                            return False
                await _send_body(send, body)
        if self._fault_pending and await self._fire_fault():  # the reply was shorter
            return False
        generation = self.generation
        if generation.status is GenerationStatus.FAILED:
            await _send_body(
                send, ChunkEncoder.error_event(_provider_error(generation)), more=False
            )
            return True
        finish_reason = generation.finish_reason
        if finish_reason is None:  # cancelled
            return False
        if generation.status is GenerationStatus.FINISHED:
            self.engine.mark_completed(generation)
        tail = self.encoder.finish_event(finish_reason)
        if self.include_usage:
            tail += self.encoder.usage_event(self.prompt_tokens, sent)
        await _send_body(send, tail + ChunkEncoder.DONE, more=False)
        return True


class ChatCompletionJSONResponse(_ChatCompletionResponse):
    """A non-streaming ``chat.completion``, sent once the whole generation was produced.

    A finished generation counts as completed just before the response is sent; a failed one
    is answered with its HTTP error. With a disconnect fault the status line and headers and
    the first bytes of the body are sent once ``after_tokens`` tokens were produced, then the
    connection is cut.
    """

    async def _deliver(self, send: Send) -> bool:
        generation = self.generation
        if self.fault is not None and self.fault.kind is FaultKind.DISCONNECT:
            await self._send_truncated_json(send, self.completion_id)
            return False
        status = await generation.wait_done()
        if status is GenerationStatus.FAILED:
            error = _provider_error(generation)
            await _send_json(send, error.body(), error.status_code)
            return True
        finish_reason = generation.finish_reason
        if finish_reason is None:
            return False
        if status is GenerationStatus.FINISHED:
            self.engine.mark_completed(generation)
        payload = chat_completion(
            completion_id=self.completion_id,
            created=generation.created_at,
            model=generation.request.model,
            content=generation.text,
            finish_reason=finish_reason,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=generation.produced,
        )
        await _send_json(send, payload)
        return True


class ResponseEventStreamResponse(_AttachedGenerationResponse):
    """``text/event-stream`` of the Responses API events of one response, from any position.

    Sends every event whose ``sequence_number`` is greater than ``starting_after`` (all of them
    when ``None``): first those already logged, then live ones, and ends after the terminal
    event. A connection fault applies to the connection of the create request only: it counts
    the delta events this connection sent. Whether the generation survives a lost or cut
    connection depends on the response: a background response keeps running.
    """

    def __init__(
        self,
        *,
        record: ResponseRecord,
        starting_after: int | None = None,
        fault: ConnectionFault | None = None,
    ) -> None:
        super().__init__(
            generation=record.generation, fault=fault, cancel_on_detach=not record.background
        )
        self.record = record
        self.first_seq = 0 if starting_after is None else max(0, starting_after + 1)
        self.close_on_error = fault is not None and fault.kind is FaultKind.ERROR_EVENT

    async def _deliver(self, send: Send) -> bool:
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        deltas = 0
        async with contextlib.aclosing(self.record.follow(self.first_seq)) as batches:
            async for batch in batches:
                body = b""
                for event in batch:
                    kind = event["type"]
                    is_delta = kind == "response.output_text.delta"
                    if (is_delta or kind in _TAIL_EVENT_TYPES) and self._fault_due(
                        deltas if is_delta else 1 << 30
                    ):
                        await _send_body(send, body)
                        body = b""
                        if await self._fire_fault():
                            return False
                    body += encode_event(event)
                    if kind == "error" and self.close_on_error:
                        await _send_body(send, body, more=False)
                        return True
                    if is_delta:
                        deltas += 1
                        if self._fault_due(deltas):
                            await _send_body(send, body)
                            body = b""
                            if await self._fire_fault():
                                return False
                await _send_body(send, body)
        await _send_body(send, b"", more=False)
        return True


class ResponseJSONResponse(_AttachedGenerationResponse):
    """A non-streaming Responses API answer to ``POST /v1/responses``.

    In background mode the response object is sent at once (status ``queued``); otherwise once
    the generation is terminal (whatever its status). With a disconnect fault the status line,
    headers and the first bytes of the body are sent once ``after_tokens`` tokens were
    produced, then the connection is cut.
    """

    def __init__(self, *, record: ResponseRecord, fault: ConnectionFault | None = None) -> None:
        super().__init__(
            generation=record.generation, fault=fault, cancel_on_detach=not record.background
        )
        self.record = record

    async def _deliver(self, send: Send) -> bool:
        if self.fault is not None and self.fault.kind is FaultKind.DISCONNECT:
            await self._send_truncated_json(send, self.record.id)
            return False
        if self.record.background:
            payload = self.record.initial_object()
        else:
            await self.generation.wait_done()
            payload = self.record.current_object()
        await _send_json(send, payload)
        return True
