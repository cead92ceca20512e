"""Generation engine: turns requests into token streams paced like a real LLM.

A :class:`Generation` is produced by a background task that is independent of any HTTP
connection: after ``ttft`` the first token becomes available, then tokens appear at
``tokens_per_second``. Transports *follow* a generation from any sequence number
(:meth:`Generation.follow`), so several readers, late readers and re-attaching readers all see
the same tokens. What happens when a reader goes away is the transport's decision: chat
completions cancel the generation (:meth:`Generation.cancel`); a Responses API generation with
``background=true`` simply stops being followed and runs to the end, resumable by sequence
number (see :mod:`llm_simulator.responses`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import structlog

from llm_simulator.stats import GenerationStats
from llm_simulator.text import simulated_tokens

logger = structlog.get_logger(__name__)

#: Finished or cancelled generations kept for lookup by id.
DEFAULT_RETAINED_GENERATIONS = 256
# Guards against float rounding making a token due a hair too late.
_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """The inputs that fully determine a generation's text.

    ``prompt`` (the text of the last user message) is only used as the key of the per-prompt
    statistics; it does not influence the text beyond being part of ``messages``.
    """

    model: str
    messages: list[dict[str, Any]]
    max_tokens: int
    temperature: float
    prompt: str = field(default="")


class GenerationStatus(StrEnum):
    """Lifecycle of a generation. ``finished`` and ``cancelled`` are terminal."""

    WAITING = "waiting"  # started, first token not yet due (time to first token)
    RUNNING = "running"  # some tokens produced
    FINISHED = "finished"  # every token produced
    CANCELLED = "cancelled"  # stopped before the end; no more tokens will appear


class Generation:
    """One generation: its planned tokens and how many of them have been produced so far.

    Contract: ``produced`` only grows, from 0 to ``len(tokens)``; tokens ``[0, produced)`` are
    available to readers. Once the status is terminal, ``produced`` never changes again.
    Must be used from the event loop that runs the engine.
    """

    def __init__(self, generation_id: str, request: GenerationRequest, tokens: list[str]) -> None:
        self.id = generation_id
        self.request = request
        self.tokens = tokens
        self.created_at = int(time.time())
        self.status = GenerationStatus.WAITING
        self.completed = False  # set by GenerationEngine.mark_completed
        self.stats_epoch = 0  # set by GenerationEngine.start
        #: Wall-clock (``time.time()``) and monotonic instants the status became terminal.
        self.ended_at: float | None = None
        self.ended_monotonic: float | None = None
        self._produced = 0
        self._changed = asyncio.Event()
        self._producer: asyncio.Task[None] | None = None

    @property
    def produced(self) -> int:
        """Number of tokens available to readers."""
        return self._produced

    @property
    def done(self) -> bool:
        """True once the generation is finished or cancelled."""
        return self.status in (GenerationStatus.FINISHED, GenerationStatus.CANCELLED)

    def _notify(self) -> None:
        if self.done and self.ended_monotonic is None:
            self.ended_at = time.time()
            self.ended_monotonic = time.monotonic()
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _publish(self, produced: int) -> None:
        if self.done or produced <= self._produced:
            return
        self._produced = min(produced, len(self.tokens))
        self.status = GenerationStatus.RUNNING
        if self._produced == len(self.tokens):
            self.status = GenerationStatus.FINISHED
        self._notify()

    def cancel(self) -> None:
        """Stop producing tokens now (no-op if already terminal)."""
        if self.done:
            return
        self.status = GenerationStatus.CANCELLED
        self._notify()
        producer = self._producer
        if producer is not None and producer is not asyncio.current_task():
            producer.cancel()

    async def follow(self, start: int = 0) -> AsyncGenerator[list[str], None]:
        """Yield the tokens from sequence number ``start`` on, in batches, as they are produced.

        Each batch holds the tokens that became available since the previous batch (the first
        batch starts at ``start``). Ends when the generation is terminal and every produced
        token was yielded; check :attr:`status` afterwards to tell finished from cancelled.
        """
        cursor = max(0, start)
        while True:
            changed = self._changed
            if cursor < self._produced:
                end = self._produced
                batch = self.tokens[cursor:end]
                cursor = end
                yield batch
                continue
            if self.done:
                return
            await changed.wait()

    async def wait_done(self) -> GenerationStatus:
        """Wait until the generation is terminal and return its final status."""
        while not self.done:
            await self._changed.wait()
        return self.status

    async def _produce(self, ttft_s: float, tokens_per_second: float) -> None:
        loop = asyncio.get_running_loop()
        first_token_at = loop.time() + ttft_s
        total = len(self.tokens)
        if total == 0:
            self.status = GenerationStatus.FINISHED
            self._notify()
            return
        while not self.done:
            now = loop.time()
            if now >= first_token_at:
                due = int((now - first_token_at) * tokens_per_second + _EPSILON) + 1
                self._publish(due)
                if self.done:
                    return
            next_at = first_token_at + self._produced / tokens_per_second
            await asyncio.sleep(max(0.0, next_at - loop.time()))


class GenerationEngine:
    """Starts generations and keeps the recent ones addressable by id.

    Contract: :meth:`start` counts the generation as started in ``stats`` and immediately begins
    producing it in a background task; :meth:`mark_completed` counts it as completed at most
    once. Who calls it depends on the API: chat completions call it when the last token was
    delivered to the client; a generation started with ``complete_on_finish=True`` (Responses
    API) is counted by the engine itself as soon as its last token is produced, whether or not a
    client is attached.
    """

    def __init__(
        self,
        *,
        ttft_s: float,
        tokens_per_second: float,
        stats: GenerationStats,
        retained: int = DEFAULT_RETAINED_GENERATIONS,
    ) -> None:
        if tokens_per_second <= 0:
            raise ValueError("tokens_per_second must be > 0")
        self._ttft_s = max(0.0, ttft_s)
        self._tokens_per_second = tokens_per_second
        self._stats = stats
        self._retained = retained
        self._generations: OrderedDict[str, Generation] = OrderedDict()
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, request: GenerationRequest, *, complete_on_finish: bool = False) -> Generation:
        """Create a generation for ``request`` and start producing its tokens.

        With ``complete_on_finish`` the generation counts as completed the moment its last token
        is produced (no transport needs to call :meth:`mark_completed`).
        """
        tokens = simulated_tokens(
            request.messages, request.model, request.max_tokens, request.temperature
        )
        generation = Generation(f"gen_{uuid.uuid4().hex}", request, tokens)
        self._generations[generation.id] = generation
        self._evict()
        generation.stats_epoch = self._stats.record_started(request.prompt)
        task = asyncio.create_task(
            self._run(generation, complete_on_finish),
            name=f"llm-simulator-generation-{generation.id}",
        )
        generation._producer = task
        self._tasks[generation.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(generation.id, None))
        logger.debug(
            "sim.generation.started", generation_id=generation.id, max_tokens=request.max_tokens
        )
        return generation

    async def _run(self, generation: Generation, complete_on_finish: bool) -> None:
        try:
            await generation._produce(self._ttft_s, self._tokens_per_second)
            if complete_on_finish and generation.status is GenerationStatus.FINISHED:
                self.mark_completed(generation)
        finally:
            generation._producer = None
            generation.cancel()  # no-op when finished; marks an interrupted producer cancelled

    def get(self, generation_id: str) -> Generation | None:
        """A started generation that is still retained, or ``None``."""
        return self._generations.get(generation_id)

    def mark_completed(self, generation: Generation) -> None:
        """Count ``generation`` as completed (idempotent)."""
        if generation.completed:
            return
        generation.completed = True
        self._stats.record_completed(generation.request.prompt, generation.stats_epoch)
        logger.debug("sim.generation.completed", generation_id=generation.id)

    def _evict(self) -> None:
        """Forget the oldest terminal generations beyond the retention limit."""
        excess = len(self._generations) - self._retained
        if excess <= 0:
            return
        for generation_id in [g.id for g in self._generations.values() if g.done][:excess]:
            del self._generations[generation_id]

    async def aclose(self) -> None:
        """Cancel every running generation and wait for the producers to stop."""
        tasks = list(self._tasks.values())
        for generation in self._generations.values():
            generation.cancel()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
