"""Fault injection: arm a failure for the next N generation requests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog

from llm_simulator.settings import FaultKind, SimulatorSettings

logger = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """The fault one particular request gets."""

    kind: FaultKind
    after_tokens: int
    retry_after_s: int


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
        self._kind = FaultKind.NONE
        self._remaining = 0
        self._after_tokens = settings.fault_after_tokens
        self._retry_after_s = settings.retry_after_s
        self.arm(settings.fault, settings.fault_count)

    def arm(
        self,
        kind: FaultKind,
        count: int,
        *,
        after_tokens: int | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        """Give ``kind`` to the next ``count`` generation requests (replaces any armed fault).

        ``after_tokens`` / ``retry_after_s`` default to the values from the settings.
        ``kind == none`` or ``count == 0`` disarms.
        """
        if count < 0:
            raise ValueError("count must be >= 0")
        self._kind = kind if count > 0 else FaultKind.NONE
        self._remaining = count if kind is not FaultKind.NONE else 0
        self._after_tokens = self._default_after_tokens if after_tokens is None else after_tokens
        self._retry_after_s = (
            self._default_retry_after_s if retry_after_s is None else retry_after_s
        )
        logger.info("sim.faults.armed", **self.describe())

    def disarm(self) -> None:
        """Remove any armed fault."""
        self.arm(FaultKind.NONE, 0)

    def take(self) -> FaultPlan | None:
        """Return the fault for the current request (consuming one), or ``None``."""
        if self._kind is FaultKind.NONE or self._remaining <= 0:
            return None
        self._remaining -= 1
        plan = FaultPlan(self._kind, self._after_tokens, self._retry_after_s)
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
        }
