"""Circus output stream that prefixes each line with the process name and pid."""

from __future__ import annotations

from typing import Any

from circus.stream import FancyStdoutStream


class LabelledStream(FancyStdoutStream):  # type: ignore[misc]
    """`12:00:01 worker   4242 | line` — coloured by process kind, aligned."""

    def __init__(self, label: str = "", **kwargs: Any) -> None:
        super().__init__(time_format="%H:%M:%S", **kwargs)
        self.label = label

    def prefix(self, data: dict[str, Any]) -> str:
        time = self.now().strftime(self.time_format)
        return f"\033[0;3{self.color_code}m{time} {self.label:<9} {data['pid']:>7} | "
