"""The `main` every benchmark shares: parse `--size`, start a stack, measure, report."""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.figures import Report, emit
from bench.sampler import ProcessSampler, busy_core_seconds, contention
from bench.stack import harness_app_env, log, running_stack, stop_on_signals
from testing.machine import git_head
from testing.stack import ROOT, LocalStack

RESULTS_DIR = ROOT / "bench" / "results"
SIZES = ("tiny", "full")


def parse_args(description: str | None, argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(description or "").split("\n\n")[0])
    parser.add_argument(
        "--size",
        choices=SIZES,
        default="full",
        help="tiny: seconds, to check the script works (CI); full: the figures for the docs",
    )
    parser.add_argument("--json-out", type=Path, help="also write the JSON report to this file")
    parser.add_argument(
        "--keep-workdir", action="store_true", help="keep the stack's data and logs afterwards"
    )
    return parser.parse_args(argv)


def now_utc() -> datetime:
    return datetime.now(UTC)


def run_benchmark(
    name: str,
    doc: str | None,
    simulator_env: dict[str, str],
    measure: Callable[[LocalStack, str], Any],
    argv: list[str] | None = None,
    workers: int = 2,
    app_env: dict[str, str] | None = None,
) -> int:
    """The `main` of every benchmark: parse --size, start a stack, measure, report."""
    args = parse_args(doc, argv)
    stop_on_signals()
    # The stack's application settings, also for this process's Settings() (the stack's
    # processes get this environment plus the harness's and `app_env`).
    os.environ.update(harness_app_env(app_env or {}))
    started_at = now_utc()
    load_before = [round(x, 2) for x in os.getloadavg()]
    head = git_head()
    log(f"{name}: starting a stack ({workers} workers) …")
    clock = time.monotonic()
    with running_stack(
        simulator_env, workers=workers, app_env=app_env, keep_workdir=args.keep_workdir
    ) as stack:
        log(f"{name}: stack up in {time.monotonic() - clock:.1f} s; measuring ({args.size}) …")
        clock = time.monotonic()
        machine_before = busy_core_seconds()
        with ProcessSampler(lambda: {"this benchmark": os.getpid()}, interval_s=0.5) as own:
            report: Report = asyncio.run(measure(stack, args.size))
        wall = time.monotonic() - clock
        report.contention = contention(wall, busy_core_seconds() - machine_before, own)
        log(f"{name}: measured in {wall:.1f} s; stopping the stack …")
        clock = time.monotonic()
    log(f"{name}: stack stopped in {time.monotonic() - clock:.1f} s")
    report.simulator_env = {**simulator_env, **(app_env or {})}
    report.git_head_at_start = head
    emit(report, started_at, load_before, args.json_out)
    return 0
