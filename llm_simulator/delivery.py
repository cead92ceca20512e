"""ASGI responses that deliver a running generation to one attached HTTP client.

Both responses follow the chat completions lifecycle: the generation belongs to the request,
so a client that goes away cancels it (it then counts as started but never completed). They
can also simulate a dropped connection: after ``cut_after`` tokens they return from the ASGI
call without finishing the response body, which makes the server (uvicorn) close the TCP
connection mid-response, so the client sees a truncated body rather than a clean end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import structlog
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from llm_simulator.engine import Generation, GenerationEngine, GenerationStatus
from llm_simulator.protocol import ChunkEncoder, chat_completion

logger = structlog.get_logger(__name__)


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class _AttachedGenerationResponse(Response):
    """Runs :meth:`_deliver` while watching for the client to disconnect.

    Contract for subclasses: :meth:`_deliver` returns ``True`` when it completed the response
    (sent ``more_body=False``) and ``False`` when the connection must be cut. A client that
    disconnects cancels both the delivery and the generation.
    """

    def __init__(
        self,
        *,
        generation: Generation,
        engine: GenerationEngine,
        prompt_tokens: int,
        cut_after: int | None,
    ) -> None:
        # Headers are sent by _deliver; Response.__init__ is skipped on purpose so that no
        # Content-Length is computed for a body that does not exist yet.
        self.status_code = 200
        self.background = None
        self.raw_headers = []
        self.generation = generation
        self.engine = engine
        self.prompt_tokens = prompt_tokens
        self.cut_after = cut_after

    @property
    def completion_id(self) -> str:
        """The ``id`` of the chat completion, derived from the generation id."""
        return "chatcmpl-" + self.generation.id.removeprefix("gen_")

    async def _deliver(self, send: Send) -> bool:
        raise NotImplementedError

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
            self.generation.cancel()
            logger.info(
                "sim.client.disconnected",
                generation_id=self.generation.id,
                tokens_produced=self.generation.produced,
            )
            return
        if error is not None:
            self.generation.cancel()
            raise error
        if not deliver.result():
            self.generation.cancel()
            logger.warning(
                "sim.connection.cut",
                generation_id=self.generation.id,
                tokens_produced=self.generation.produced,
                reason="fault" if self.cut_after is not None else self.generation.status.value,
            )


class ChatCompletionStreamResponse(_AttachedGenerationResponse):
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
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no"),
                ],
            }
        )
        await send(
            {"type": "http.response.body", "body": self.encoder.role_event(), "more_body": True}
        )
        sent = 0
        cut = self.cut_after
        if cut is None or sent < cut:
            async with contextlib.aclosing(self.generation.follow()) as batches:
                async for batch in batches:
                    chunk = batch if cut is None else batch[: cut - sent]
                    body = b"".join(self.encoder.token_event(token) for token in chunk)
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                    sent += len(chunk)
                    if cut is not None and sent >= cut:
                        break
        if cut is not None or self.generation.status is not GenerationStatus.FINISHED:
            return False
        self.engine.mark_completed(self.generation)
        tail = self.encoder.finish_event()
        if self.include_usage:
            tail += self.encoder.usage_event(self.prompt_tokens, sent)
        tail += ChunkEncoder.DONE
        await send({"type": "http.response.body", "body": tail, "more_body": False})
        return True


class ChatCompletionJSONResponse(_AttachedGenerationResponse):
    """A non-streaming ``chat.completion``, sent once the whole generation was produced.

    The generation counts as completed just before the response is sent. With ``cut_after``
    the status line and headers and the first bytes of the body are sent once that many
    tokens were produced, then the connection is cut.
    """

    async def _deliver(self, send: Send) -> bool:
        generation = self.generation
        if self.cut_after is not None:
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
            partial = b'{"id":' + json.dumps(self.completion_id).encode()
            await send({"type": "http.response.body", "body": partial, "more_body": True})
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
        return True
