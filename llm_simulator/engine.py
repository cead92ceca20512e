"""Generation engine: turns requests into token streams paced like a real LLM.

A :class:`Generation` is produced by a background task that is independent of any HTTP
connection: it waits ``ttft`` (status ``waiting``, a background response's ``queued``), then
starts (``running``) and tokens appear at ``tokens_per_second`` until the reply's natural end or
the request's limit (``finished``). A :class:`GenerationPlan` can make it end otherwise
(``failed``, ``filtered``, ``cancelled`` after N tokens), pause, or never start: that is how
provider-side faults are simulated. Transports *follow* a generation from any token index
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
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import structlog

from llm_simulator.stats import GenerationStats
from llm_simulator.text import SimulatedReply, simulated_reply

logger = structlog.get_logger(__name__)

#: Finished or cancelled generations kept for lookup by id.
DEFAULT_RETAINED_GENERATIONS = 256
# Guards against float rounding making a token due a hair too late.
_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """The inputs that fully determine a generation's text.

    ``prompt`` (the text of the last user message) is only used as the key of the per-prompt
    statistics, and ``input_tokens`` (the prompt size reported in ``usage``) only for billing;
    neither influences the text beyond ``messages``.
    """

    model: str
    messages: list[dict[str, Any]]
    max_tokens: int
    temperature: float
    prompt: str = field(default="")
    input_tokens: int = field(default=0)


class GenerationStatus(StrEnum):
    """Lifecycle of a generation. Every status after ``running`` is terminal."""

    WAITING = "waiting"  # created, not started yet (time to first token; a queued response)
    RUNNING = "running"  # started; tokens are being produced
    FINISHED = "finished"  # the reply ended: naturally, or cut at the token limit
    FILTERED = "filtered"  # stopped early by the (simulated) content filter
    FAILED = "failed"  # failed at the provider (simulated server or prompt error)
    CANCELLED = "cancelled"  # stopped before the end by a client; no more tokens will appear


TERMINAL_STATUSES = frozenset(
    {
        GenerationStatus.FINISHED,
        GenerationStatus.FILTERED,
        GenerationStatus.FAILED,
        GenerationStatus.CANCELLED,
    }
)


@dataclass(frozen=True, slots=True)
class GenerationPlan:
    """How a generation departs from producing its reply at the configured pace.

    * ``end_after`` / ``end_status``: end with ``end_status`` (``failed``, ``filtered`` or
      ``cancelled``) once ``min(end_after, len(tokens))`` tokens were produced, i.e. after the
      last token at the latest: the planned end always happens. ``error_code`` goes with a
      ``failed`` end.
    * ``pause_after`` / ``pause_s``: once that many tokens were produced (after the last one
      at the latest), produce nothing for ``pause_s`` seconds, then go on.
    * ``hold``: never start: stay ``waiting`` until cancelled.
    """

    end_after: int | None = None
    end_status: GenerationStatus | None = None
    error_code: str | None = None
    pause_after: int | None = None
    pause_s: float = 0.0
    hold: bool = False

    def __post_init__(self) -> None:
        if (self.end_after is None) != (self.end_status is None):
            raise ValueError("end_after and end_status go together")
        if self.end_status is not None and self.end_status not in (
            GenerationStatus.FAILED,
            GenerationStatus.FILTERED,
            GenerationStatus.CANCELLED,
        ):
            raise ValueError(f"a plan cannot end a generation as {self.end_status}")


class Generation:
    """One generation: its planned tokens and how many of them have been produced so far.

    Contract: ``produced`` only grows, from 0 to ``len(tokens)``; tokens ``[0, produced)`` are
    available to readers. Once the status is terminal, ``produced`` never changes again.
    Listeners added with :meth:`add_listener` are called synchronously after every change
    (start, new tokens, end), in the order they were added. Must be used from the event loop
    that runs the engine.
    """

    def __init__(
        self,
        generation_id: str,
        request: GenerationRequest,
        reply: SimulatedReply,
        plan: GenerationPlan | None = None,
    ) -> None:
        self.id = generation_id
        self.request = request
        self.reply = reply
        self.tokens: tuple[str, ...] = reply.tokens
        self.plan = plan or GenerationPlan()
        self.created_at = int(time.time())
        self.status = GenerationStatus.WAITING
        self.started = False  # set when the generation leaves ``waiting`` by starting
        self.completed = False  # set by GenerationEngine.mark_completed
        self.stats_epoch = 0  # set by GenerationEngine.start
        #: Wall-clock (``time.time()``) and monotonic instants the status became terminal.
        self.ended_at: float | None = None
        self.ended_monotonic: float | None = None
        self._produced = 0
        self._changed = asyncio.Event()
        self._producer: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[], None]] = []
        self._on_produced: Callable[[int], None] | None = None

    @property
    def produced(self) -> int:
        """Number of tokens available to readers."""
        return self._produced

    @property
    def done(self) -> bool:
        """True once the status is terminal."""
        return self.status in TERMINAL_STATUSES

    @property
    def text(self) -> str:
        """The text produced so far."""
        return "".join(self.tokens[: self._produced])

    @property
    def finish_reason(self) -> str | None:
        """The chat completions ``finish_reason`` of a terminal generation: ``stop`` or
        ``length`` when finished, ``content_filter`` when filtered, else ``None``."""
        if self.status is GenerationStatus.FINISHED:
            return self.reply.finish_reason
        if self.status is GenerationStatus.FILTERED:
            return "content_filter"
        return None

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every later change of the generation."""
        self._listeners.append(listener)

    def _notify(self) -> None:
        if self.done and self.ended_monotonic is None:
            self.ended_at = time.time()
            self.ended_monotonic = time.monotonic()
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        for listener in self._listeners:
            listener()

    def _start(self) -> None:
        if self.done or self.started:
            return
        self.started = True
        self.status = GenerationStatus.RUNNING
        self._notify()

    def _publish(self, produced: int, limit: int) -> None:
        if self.done or produced <= self._produced:
            return
        before = self._produced
        self._produced = min(produced, limit)
        if self._on_produced is not None:
            self._on_produced(self._produced - before)
        self._notify()

    def _end(self, status: GenerationStatus) -> None:
        if self.done:
            return
        self.status = status
        self._notify()

    def cancel(self) -> None:
        """Stop producing tokens now (no-op if already terminal)."""
        if self.done:
            return
        self._end(GenerationStatus.CANCELLED)
        producer = self._producer
        if producer is not None and producer is not asyncio.current_task():
            producer.cancel()

    async def follow(self, start: int = 0) -> AsyncGenerator[tuple[str, ...], None]:
        """Yield the tokens from index ``start`` on, in batches, as they are produced.

        Each batch holds the tokens that became available since the previous batch (the first
        batch starts at ``start``). Ends when the generation is terminal and every produced
        token was yielded; check :attr:`status` afterwards to tell how it ended.
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
        plan = self.plan
        if plan.hold:
            await asyncio.Event().wait()  # until cancelled
        loop = asyncio.get_running_loop()
        limit = len(self.tokens)
        if plan.end_after is not None:
            limit = min(limit, plan.end_after)
        pause_at = None if plan.pause_after is None else min(plan.pause_after, limit)
        first_token_at = loop.time() + ttft_s
        await asyncio.sleep(max(0.0, first_token_at - loop.time()))
        self._start()
        while not self.done:
            if pause_at is not None and self._produced >= pause_at:
                pause_at = None
                await asyncio.sleep(plan.pause_s)
                first_token_at += plan.pause_s
            if self._produced >= limit:
                self._end(plan.end_status or GenerationStatus.FINISHED)
                return
            now = loop.time()
            due = int((now - first_token_at) * tokens_per_second + _EPSILON) + 1
            self._publish(due, pause_at if pause_at is not None else limit)
            if self._produced >= limit or (pause_at is not None and self._produced >= pause_at):
                continue
            next_at = first_token_at + self._produced / tokens_per_second
            await asyncio.sleep(max(0.0, next_at - loop.time()))


class GenerationEngine:
    """Starts generations and keeps the recent ones addressable by id.

    Contract: :meth:`start` counts the generation as started in ``stats`` (billing its input
    tokens), immediately begins producing it in a background task, and bills every token as it
    is produced; :meth:`mark_completed` counts it as completed at most once. Who calls it
    depends on the API: chat completions call it when the last token was delivered to the
    client; a generation started with ``complete_on_finish=True`` (Responses API) is counted by
    the engine itself as soon as it is ``finished``, whether or not a client is attached.
    Generations that fail, are filtered or are cancelled never count as completed.
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
        self._variant = ""
        self._configured_tokens_per_second = tokens_per_second
        self._stats = stats
        self._retained = retained
        self._generations: OrderedDict[str, Generation] = OrderedDict()
        self._tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def tokens_per_second(self) -> float:
        """The rate generations started from now on produce tokens at."""
        return self._tokens_per_second

    @property
    def variant(self) -> str:
        """Mixed into the seed of generations started from now on ('' : the usual reply)."""
        return self._variant

    def set_variant(self, variant: str) -> None:
        """Generations started from now on answer the same request with another reply
        (a real model sampling again); ``''`` restores the usual one."""
        self._variant = variant

    def set_pace(self, tokens_per_second: float | None) -> None:
        """Produce the generations started from now on at ``tokens_per_second`` (``None``:
        the configured rate again); running generations keep their pace."""
        if tokens_per_second is not None and tokens_per_second <= 0:
            raise ValueError("tokens_per_second must be > 0")
        self._tokens_per_second = tokens_per_second or self._configured_tokens_per_second

    def start(
        self,
        request: GenerationRequest,
        *,
        plan: GenerationPlan | None = None,
        complete_on_finish: bool = False,
    ) -> Generation:
        """Create a generation for ``request`` (following ``plan``) and start producing it.

        With ``complete_on_finish`` the generation counts as completed the moment it is
        finished (no transport needs to call :meth:`mark_completed`).
        """
        reply = simulated_reply(
            request.messages, request.model, request.max_tokens, request.temperature, self._variant
        )
        generation = Generation(f"gen_{uuid.uuid4().hex}", request, reply, plan)
        self._generations[generation.id] = generation
        self._evict()
        epoch = self._stats.record_started(request.prompt, request.input_tokens)
        generation.stats_epoch = epoch
        generation._on_produced = lambda count: self._stats.record_output_tokens(count, epoch)
        task = asyncio.create_task(
            self._run(generation, complete_on_finish),
            name=f"llm-simulator-generation-{generation.id}",
        )
        generation._producer = task
        self._tasks[generation.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(generation.id, None))
        logger.debug(
            "sim.generation.started",
            generation_id=generation.id,
            max_tokens=request.max_tokens,
            tokens=len(reply.tokens),
            finish_reason=reply.finish_reason,
        )
        return generation

    async def _run(self, generation: Generation, complete_on_finish: bool) -> None:
        try:
            await generation._produce(self._ttft_s, self._tokens_per_second)
            if complete_on_finish and generation.status is GenerationStatus.FINISHED:
                self.mark_completed(generation)
        finally:
            generation._producer = None
            generation.cancel()  # no-op when terminal; marks an interrupted producer cancelled

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
