"""ASGI responses that deliver a running generation to one attached HTTP client.

Chat completions follow the chat lifecycle: the generation belongs to the request, so a client
that goes away cancels it (it then counts as started but never completed). Responses API
deliveries do the same for a response created without ``background``; a background response
belongs to the server, so a client that goes away only stops reading it and may re-attach.
Every delivery can also simulate a dropped connection: after ``cut_after`` tokens it returns
from the ASGI call without finishing the response body, which makes the server (uvicorn) close
the TCP connection mid-response, so the client sees a truncated body rather than a clean end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from llm_simulator.engine import Generation, GenerationEngine, GenerationStatus
from llm_simulator.protocol import ChunkEncoder, chat_completion
from llm_simulator.responses import PREAMBLE_EVENTS, ResponseRecord, encode_event

logger = structlog.get_logger(__name__)


_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _send_json(send: Send, payload: dict[str, Any]) -> None:
    """Send ``payload`` as the whole ``application/json`` response."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


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
        cut_after: int | None,
        cancel_on_detach: bool = True,
    ) -> None:
        # Headers are sent by _deliver; Response.__init__ is skipped on purpose so that no
        # Content-Length is computed for a body that does not exist yet.
        self.status_code = 200
        self.background = None
        self.raw_headers = []
        self.generation = generation
        self.cut_after = cut_after
        self.cancel_on_detach = cancel_on_detach

    async def _deliver(self, send: Send) -> bool:
        raise NotImplementedError

    def _detach(self) -> None:
        if self.cancel_on_detach:
            self.generation.cancel()

    async def _relay_tokens(
        self, send_batch: Callable[[int, list[str]], Awaitable[None]], start: int = 0
    ) -> int:
        """Pass the tokens from index ``start`` on to ``send_batch`` as they are produced, in
        batches, each with the index of its first token; return how many were passed on.

        Ends when the generation is terminal and every token was passed on, or, with
        ``cut_after``, once that many tokens were (the caller then cuts the connection).
        """
        cut = self.cut_after
        sent = 0
        if cut is not None and cut <= 0:
            return sent
        async with contextlib.aclosing(self.generation.follow(start)) as batches:
            async for batch in batches:
                chunk = batch if cut is None else batch[: cut - sent]
                await send_batch(start + sent, chunk)
                sent += len(chunk)
                if cut is not None and sent >= cut:
                    break
        return sent

    async def _send_truncated_json(self, send: Send, object_id: str) -> None:
        """For ``cut_after``: once that many tokens were produced, send the status line, the
        headers and the first bytes of a JSON body naming ``object_id``, and no more."""
        assert self.cut_after is not None
        generation = self.generation
        if generation.produced < self.cut_after:
            async with contextlib.aclosing(generation.follow()) as batches:
                async for _ in batches:
                    if generation.produced >= self.cut_after:
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
                reason="fault" if self.cut_after is not None else self.generation.status.value,
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
        cut_after: int | None,
    ) -> None:
        super().__init__(generation=generation, cut_after=cut_after)
        self.engine = engine
        self.prompt_tokens = prompt_tokens

    @property
    def completion_id(self) -> str:
        """The ``id`` of the chat completion, derived from the generation id."""
        return "chatcmpl-" + self.generation.id.removeprefix("gen_")


class ChatCompletionStreamResponse(_ChatCompletionResponse):
    """``text/event-stream`` of ``chat.completion.chunk`` events for one generation.

    Sends the role chunk at once, then one chunk per token as tokens are produced, then (once
    every token was sent, and only then, the generation counts as completed) the finish chunk,
    the usage chunk if requested, and ``data: [DONE]``.
    """

    def __init__(
        self,
        *,
        generation: Generation,
        engine: GenerationEngine,
        prompt_tokens: int,
        include_usage: bool,
        cut_after: int | None = None,
    ) -> None:
        super().__init__(
            generation=generation,
            engine=engine,
            prompt_tokens=prompt_tokens,
            cut_after=cut_after,
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
        await send(
            {"type": "http.response.body", "body": self.encoder.role_event(), "more_body": True}
        )

        async def send_token_events(_first: int, tokens: list[str]) -> None:
            body = b"".join(self.encoder.token_event(token) for token in tokens)
            await send({"type": "http.response.body", "body": body, "more_body": True})

        sent = await self._relay_tokens(send_token_events)
        if self.cut_after is not None or self.generation.status is not GenerationStatus.FINISHED:
            return False
        self.engine.mark_completed(self.generation)
        tail = self.encoder.finish_event()
        if self.include_usage:
            tail += self.encoder.usage_event(self.prompt_tokens, sent)
        tail += ChunkEncoder.DONE
        await send({"type": "http.response.body", "body": tail, "more_body": False})
        return True


class ChatCompletionJSONResponse(_ChatCompletionResponse):
    """A non-streaming ``chat.completion``, sent once the whole generation was produced.

    The generation counts as completed just before the response is sent. With ``cut_after``
    the status line and headers and the first bytes of the body are sent once that many
    tokens were produced, then the connection is cut.
    """

    async def _deliver(self, send: Send) -> bool:
        generation = self.generation
        if self.cut_after is not None:
            await self._send_truncated_json(send, self.completion_id)
            return False
        if await generation.wait_done() is not GenerationStatus.FINISHED:
            return False
        self.engine.mark_completed(generation)
        payload = chat_completion(
            completion_id=self.completion_id,
            created=generation.created_at,
            model=generation.request.model,
            content="".join(generation.tokens),
            prompt_tokens=self.prompt_tokens,
            completion_tokens=len(generation.tokens),
        )
        await _send_json(send, payload)
        return True


class ResponseEventStreamResponse(_AttachedGenerationResponse):
    """``text/event-stream`` of Responses API events of one response, from any position.

    Sends every event whose ``sequence_number`` is greater than ``starting_after`` (all of them
    when ``None``): first those already produced, then live ones as tokens appear, and ends
    after the terminal event (``response.completed``, or ``response.incomplete`` for a
    cancelled response). With ``cut_after`` (disconnect fault) the connection is cut once that
    many delta events were sent by this connection. Whether the generation survives a lost or
    cut connection depends on the response: a background response keeps running.
    """

    def __init__(
        self,
        *,
        record: ResponseRecord,
        starting_after: int | None = None,
        cut_after: int | None = None,
    ) -> None:
        super().__init__(
            generation=record.generation,
            cut_after=cut_after,
            cancel_on_detach=not record.background,
        )
        self.record = record
        self.first_seq = 0 if starting_after is None else max(0, starting_after + 1)

    async def _send_events(self, send: Send, events: list[dict[str, Any]]) -> None:
        body = b"".join(encode_event(event) for event in events)
        if body:
            await send({"type": "http.response.body", "body": body, "more_body": True})

    async def _deliver(self, send: Send) -> bool:
        record = self.record
        first = self.first_seq
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        await self._send_events(send, record.preamble_events()[first:])

        async def send_delta_events(first_index: int, tokens: list[str]) -> None:
            await self._send_events(
                send, [record.delta_event(first_index + offset) for offset in range(len(tokens))]
            )

        await self._relay_tokens(send_delta_events, start=max(0, first - PREAMBLE_EVENTS))
        if self.cut_after is not None:
            return False
        # Without a cut, _relay_tokens only returns once the generation is terminal.
        tail = [event for event in record.tail_events() if event["sequence_number"] >= first]
        body = b"".join(encode_event(event) for event in tail)
        await send({"type": "http.response.body", "body": body, "more_body": False})
        return True


class ResponseJSONResponse(_AttachedGenerationResponse):
    """A non-streaming Responses API answer to ``POST /v1/responses``.

    In background mode the response object is sent at once (status ``queued``); otherwise once
    the generation is terminal (status ``completed``). With ``cut_after`` (disconnect fault) the
    status line, headers and the first bytes of the body are sent once that many tokens were
    produced, then the connection is cut.
    """

    def __init__(self, *, record: ResponseRecord, cut_after: int | None = None) -> None:
        super().__init__(
            generation=record.generation,
            cut_after=cut_after,
            cancel_on_detach=not record.background,
        )
        self.record = record

    async def _deliver(self, send: Send) -> bool:
        if self.cut_after is not None:
            await self._send_truncated_json(send, self.record.id)
            return False
        if self.record.background:
            payload = self.record.initial_object()
        else:
            await self.generation.wait_done()
            payload = self.record.current_object()
        await _send_json(send, payload)
        return True
