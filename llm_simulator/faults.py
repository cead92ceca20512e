"""Fault injection: arm a failure for the next N generation requests.

:class:`FaultInjector` hands the armed fault to requests one by one (:class:`FaultPlan`);
:meth:`FaultPlan.effects` translates it into what the request's generation does (a
:class:`~llm_simulator.engine.GenerationPlan`) and what its connection does (a
:class:`ConnectionFault`), which depends on the API and on whether the generation belongs to
the connection. :class:`~llm_simulator.settings.FaultKind` documents every kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import structlog

from llm_simulator.engine import GenerationPlan, GenerationStatus
from llm_simulator.settings import FaultKind, SimulatorSettings

logger = structlog.get_logger(__name__)

#: Human-readable messages of simulated provider errors, by code (OpenAI's wording where known).
_ERROR_MESSAGES = {
    "server_error": "The server had an error while processing your request. Sorry about that!",
    "rate_limit_exceeded": "Rate limit reached while generating the response.",
    "invalid_prompt": "Invalid prompt: your prompt was flagged as potentially violating our "
    "usage policy.",
}


def error_message(code: str) -> str:
    """The message of a simulated error with ``code`` (marked as simulated)."""
    message = _ERROR_MESSAGES.get(code, f"The response failed with error code '{code}'.")
    return f"{message} (simulated fault)"


@dataclass(frozen=True, slots=True)
class ConnectionFault:
    """What happens to the connection that carries a generation (see ``FaultKind``).

    ``disconnect``: cut after ``after_tokens`` tokens; ``stall``: stay silent for ``stall_s``
    seconds after ``after_tokens`` tokens; ``error_event``: end the stream cleanly after the
    response's ``error`` event (Responses API streams only).
    """

    kind: Literal[FaultKind.DISCONNECT, FaultKind.STALL, FaultKind.ERROR_EVENT]
    after_tokens: int
    stall_s: float = 0.0


@dataclass(frozen=True, slots=True)
class FaultEffects:
    """What a fault does to one request: its generation, its connection, its event log."""

    plan: GenerationPlan | None = None
    connection: ConnectionFault | None = None
    #: Responses API: the ``error`` event goes into the event log after this many deltas.
    error_event_after: int | None = None
    error_code: str = "server_error"


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """The fault one particular request gets."""

    kind: FaultKind
    after_tokens: int
    retry_after_s: int
    code: str = "server_error"
    stall_s: float = 60.0

    def effects(self, *, responses_stream: bool, connection_bound: bool) -> FaultEffects:
        """The effects of this fault on a request.

        ``responses_stream``: the request is a streamed ``POST /v1/responses``;
        ``connection_bound``: the generation ends with its connection (chat completions, a
        response without ``background``). The refusals (``http_429``, ``http_500``) have no
        effects here: the caller refuses the request before any generation starts.
        """
        after = self.after_tokens
        kind = self.kind
        if kind is FaultKind.ERROR_EVENT and not responses_stream:
            kind = FaultKind.RESPONSE_FAILED
        if kind is FaultKind.RESPONSE_FAILED:
            plan = GenerationPlan(
                end_after=after, end_status=GenerationStatus.FAILED, error_code=self.code
            )
            return FaultEffects(plan=plan, error_code=self.code)
        if kind is FaultKind.CONTENT_FILTER:
            return FaultEffects(
                plan=GenerationPlan(end_after=after, end_status=GenerationStatus.FILTERED)
            )
        if kind is FaultKind.STUCK_QUEUED:
            return FaultEffects(plan=GenerationPlan(hold=True))
        if kind is FaultKind.DISCONNECT:
            return FaultEffects(connection=ConnectionFault(FaultKind.DISCONNECT, after))
        if kind is FaultKind.STALL:
            plan = GenerationPlan(pause_after=after, pause_s=self.stall_s)
            return FaultEffects(
                plan=plan if connection_bound else None,
                connection=ConnectionFault(FaultKind.STALL, after, self.stall_s),
            )
        if kind is FaultKind.ERROR_EVENT:
            plan = GenerationPlan(end_after=after, end_status=GenerationStatus.CANCELLED)
            return FaultEffects(
                plan=plan if connection_bound else None,
                connection=ConnectionFault(FaultKind.ERROR_EVENT, after),
                error_event_after=after,
                error_code=self.code,
            )
        return FaultEffects()


class FaultInjector:
    """Counts down armed faults.

    Contract: while armed, each call of :meth:`take` hands the fault to one request and
    decrements the remaining count; once it reaches zero the injector is disarmed. Only valid
    generation requests call :meth:`take` (requests rejected with a 400 do not use up a fault).
    All methods must be called from the event loop thread (no locking).
    """

    def __init__(self, settings: SimulatorSettings) -> None:
        self._default_after_tokens = settings.fault_after_tokens
        self._default_retry_after_s = settings.retry_after_s
        self._default_code: str = settings.fault_code
        self._default_stall_s = settings.fault_stall_s
        self._kind = FaultKind.NONE
        self._remaining = 0
        self._after_tokens = settings.fault_after_tokens
        self._retry_after_s = settings.retry_after_s
        self._code: str = self._default_code
        self._stall_s = settings.fault_stall_s
        self.arm(settings.fault, settings.fault_count)

    def arm(
        self,
        kind: FaultKind,
        count: int,
        *,
        after_tokens: int | None = None,
        retry_after_s: int | None = None,
        code: str | None = None,
        stall_s: float | None = None,
    ) -> None:
        """Give ``kind`` to the next ``count`` generation requests (replaces any armed fault).

        ``after_tokens``, ``retry_after_s``, ``code`` and ``stall_s`` default to the values from
        the settings. ``kind == none`` or ``count == 0`` disarms.
        """
        if count < 0:
            raise ValueError("count must be >= 0")
        self._kind = kind if count > 0 else FaultKind.NONE
        self._remaining = count if kind is not FaultKind.NONE else 0
        self._after_tokens = self._default_after_tokens if after_tokens is None else after_tokens
        self._retry_after_s = (
            self._default_retry_after_s if retry_after_s is None else retry_after_s
        )
        self._code = self._default_code if code is None else code
        self._stall_s = self._default_stall_s if stall_s is None else stall_s
        logger.info("sim.faults.armed", **self.describe())

    def disarm(self) -> None:
        """Remove any armed fault."""
        self.arm(FaultKind.NONE, 0)

    def take(self) -> FaultPlan | None:
        """Return the fault for the current request (consuming one), or ``None``."""
        if self._kind is FaultKind.NONE or self._remaining <= 0:
            return None
        self._remaining -= 1
        plan = FaultPlan(
            self._kind, self._after_tokens, self._retry_after_s, self._code, self._stall_s
        )
        if self._remaining == 0:
            self._kind = FaultKind.NONE
        return plan

    def describe(self) -> dict[str, Any]:
        """JSON-ready view of what is armed."""
        return {
            "fault": self._kind.value,
            "remaining": self._remaining,
            "after_tokens": self._after_tokens,
            "retry_after_s": self._retry_after_s,
            "code": self._code,
            "stall_s": self._stall_s,
        }
