"""A benchmark's report: its figures as a table (figure | measured | baseline | goal |
met?), then exactly one JSON line (the last line of its stdout) with the same figures,
the details behind them, the settings in force and the machine."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.settings import settings_in_force
from testing.machine import machine_info


@dataclass
class Figure:
    """One row of a benchmark's table."""

    figure: str
    measured: float | None
    baseline: float | None
    unit: str
    goal: str = "—"
    met: bool | None = None
    baseline_is: str = ""


@dataclass
class Report:
    benchmark: str
    size: str
    figures: list[Figure]
    baseline: str
    details: dict[str, Any] = field(default_factory=dict)
    simulator_env: dict[str, str] = field(default_factory=dict)
    contention: dict[str, Any] = field(default_factory=dict)
    git_head_at_start: str = ""

    def to_json(self, started_at: datetime, load_before: list[float]) -> dict[str, Any]:
        machine = machine_info()
        machine["loadavg_before_1_5_15"] = load_before
        machine["git_head_at_start"] = self.git_head_at_start
        return {
            "benchmark": self.benchmark,
            "size": self.size,
            "date": started_at.isoformat(timespec="seconds"),
            "command": f"{Path(sys.executable).name} -m bench.{self.benchmark} --size {self.size}",
            "baseline": self.baseline,
            "figures": [asdict(f) for f in self.figures],
            "details": self.details,
            "settings": settings_in_force(),
            "simulator_env": self.simulator_env,
            "contention": self.contention,
            "machine": machine,
        }


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit in ("ms", "MiB", "/s", "ms/chunk"):
        return f"{value:,.1f} {unit}"
    if unit == "s":
        return f"{value:,.2f} s"
    if unit == "x":
        return f"{value:.3f}x"
    return f"{value:g} {unit}".strip()


def table(figures: list[Figure]) -> str:
    header = ("figure", "measured", "baseline", "goal", "met?")
    rows = [
        (
            f.figure,
            fmt(f.measured, f.unit),
            fmt(f.baseline, f.unit),
            f.goal,
            {True: "yes", False: "NO", None: "—"}[f.met],
        )
        for f in figures
    ]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        " | ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)),
        "-+-".join("-" * w for w in widths),
    ]
    lines += [" | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def emit(report: Report, started_at: datetime, load_before: list[float], out: Path | None) -> None:
    """Print the table, then the JSON report as the last line of stdout."""
    document = report.to_json(started_at, load_before)
    print(f"\n== {report.benchmark} ({report.size}) — baseline: {report.baseline}")
    print(table(report.figures))
    others = report.contention.get("other_work_share_of_machine", 0.0)
    if others >= 0.2:
        print(
            f"note: other work used {others:.0%} of the machine's CPU during the measurement "
            f"(load average {document['machine']['loadavg_1_5_15'][0]}): figures are noisy"
        )
    print(json.dumps(document, ensure_ascii=False), flush=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
