"""The suite's table (console and Markdown)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chaos.harness import ScenarioResult

COLUMNS = (
    "scenario",
    "completed/N",
    "ends stop/length",
    "lost",
    "duplicated",
    "generations/chat",
    "worst recovery s",
    "pass",
)


# The operator scenarios' own figures (seconds from the CLI command's return).
OPERATOR_COLUMNS = (
    "scenario",
    "actions",
    "chats ok",
    "status s",
    "record s",
    "reset seen s",
    "stream end s",
    "running after",
)


def table(results: Sequence[ScenarioResult], markdown: bool = False) -> str:
    rows = [[str(r.row()[c]) for c in COLUMNS] for r in results]
    return _render(COLUMNS, rows, markdown)


def operator_table(results: Sequence[ScenarioResult], markdown: bool = False) -> str:
    """The operator-* scenarios: what was done, how many of those chats ended exactly as
    they should, and the worst delays (empty string when none ran)."""
    rows = [_operator_row(r.operator) for r in results if r.operator]
    if not rows:
        return ""
    names = [r.scenario for r in results if r.operator]
    return _render(
        OPERATOR_COLUMNS, [[n, *row] for n, row in zip(names, rows, strict=True)], markdown
    )


def _operator_row(operator: dict[str, Any]) -> list[str]:
    def seconds(key: str) -> str:
        value = operator.get(key)
        return "-" if value is None else f"{value:.2f}"

    actions = ", ".join(f"{n} {a}" for a, n in sorted(operator.get("actions", {}).items()))
    return [
        actions or "none",
        f"{operator.get('chats_ok', 0)}/{operator.get('chats', 0)}",
        seconds("worst_status_s"),
        seconds("worst_record_s"),
        seconds("worst_reset_seen_s"),
        seconds("worst_stream_end_s"),
        str(operator.get("running_after", "-")),
    ]


def _render(columns: Sequence[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)
