"""What a measurement ran on: the machine and the checkout (benchmarks and chaos runs
print it beside their figures)."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from testing.stack import ROOT


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _run(args: list[str]) -> str:
    try:
        return subprocess.run(
            args, capture_output=True, text=True, check=False, cwd=ROOT, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def git_head() -> str:
    """The checkout's commit, short ("" outside a git checkout)."""
    return _run(["git", "rev-parse", "--short", "HEAD"])


def machine_info() -> dict[str, Any]:
    free = _run(["free", "-h"]).splitlines()
    memory = next((line.split()[1] for line in free if line.startswith("Mem:")), "?")
    # read-only git calls; --no-optional-locks: never take the index lock others may need
    dirty = _run(["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_total": memory,
        "free_h": free,
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "kernel": platform.release(),
        "git_head": git_head(),
        "git_tracked_changes": bool(dirty),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
