"""Percentiles and summaries of measured values."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0 to 100) with linear interpolation; None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def percentile_ms(seconds: list[float], q: float) -> float:
    """The q-th percentile (0 to 100) of durations in seconds, in milliseconds rounded to
    0.1 ms, for a figure; `seconds` must not be empty."""
    value = percentile(seconds, q)
    assert value is not None
    return round(value * 1000, 1)


def summary(values: list[float], scale: float = 1.0, digits: int = 1) -> dict[str, Any]:
    """n, min, p50, p95, max of `values` times `scale`, rounded."""

    def r(x: float | None) -> float | None:
        return None if x is None else round(x * scale, digits)

    return {
        "n": len(values),
        "min": r(min(values, default=None)),
        "p50": r(percentile(values, 50)),
        "p95": r(percentile(values, 95)),
        "max": r(max(values, default=None)),
    }
