"""Run every benchmark, one after the other, and write their reports to one JSON file.

Each benchmark runs as its own process with its own stack (so one's leftovers never
skew another's figures); its output is passed through as it comes. At the end: every
figure in one table, and the combined JSON (also written to `--out`).

    .venv/bin/python -m bench.run_all                 # full size -> bench/results/latest.json
    .venv/bin/python -m bench.run_all --size tiny --out /tmp/bench.json
    .venv/bin/python -m bench.run_all --only ttft,reconnect

Exit status 1 when a benchmark failed to run (an unmet goal is a result, not a failure).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.figures import Figure, table
from bench.runner import RESULTS_DIR, SIZES, now_utc
from bench.stack import stop_on_signals
from testing.machine import machine_info
from testing.stack import ROOT

BENCHMARKS = ("ttft", "checkpoints", "recovery", "concurrency", "reconnect", "load")
# Other scripts under bench/ with `--size tiny|full` and a last line of JSON, in their
# own format (cache_hit: no `figures`; server_timers: figures but no `details`): run
# and kept as they report, their figures added to the combined table when they have any.
EXTRA_BENCHMARKS = ("cache_hit", "server_timers")


def run_one(name: str, size: str) -> dict[str, Any]:
    """Run `python -m bench.<name> --size <size>`, echoing its stdout; return its report."""
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", f"bench.{name}", "--size", size],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    last_json: dict[str, Any] | None = None
    try:
        for line in process.stdout:
            if line.startswith("{"):
                try:
                    last_json = json.loads(line)
                except json.JSONDecodeError:
                    print(line, end="", flush=True)
                continue  # the combined JSON carries it
            print(line, end="", flush=True)
        code = process.wait()
    except BaseException:
        process.terminate()  # the benchmark stops its own stack, by pid
        process.wait(timeout=60)
        raise
    elapsed = round(time.monotonic() - started, 1)
    if code != 0 or last_json is None:
        return {"benchmark": name, "size": size, "error": f"exit status {code}", "wall_s": elapsed}
    last_json["wall_s"] = elapsed
    return last_json


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--size", choices=SIZES, default="full")
    everything = (*BENCHMARKS, *EXTRA_BENCHMARKS)
    parser.add_argument("--only", help=f"comma-separated subset of {', '.join(everything)}")
    parser.add_argument(
        "--out", type=Path, help="combined JSON (default: bench/results/latest.json for full)"
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",")] if args.only else list(everything)
    unknown = set(names) - set(everything)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    out = args.out or (RESULTS_DIR / "latest.json" if args.size == "full" else None)

    started_at = now_utc()
    machine_at_start = machine_info()
    reports = {name: run_one(name, args.size) for name in names}
    failed = [name for name, report in reports.items() if "error" in report]
    combined = {
        "date": started_at.isoformat(timespec="seconds"),
        "finished": now_utc().isoformat(timespec="seconds"),
        "size": args.size,
        "command": f"python -m bench.run_all --size {args.size}",
        "machine": {**machine_info(), "git_head_at_start": machine_at_start["git_head"]},
        "failed": failed,
        "results": reports,
    }
    rows: list[Figure] = []
    for name, report in reports.items():
        for figure in report.get("figures", []):
            rows.append(Figure(**{**figure, "figure": f"{name}: {figure['figure']}"}))
        if "figures" not in report and "error" not in report:
            print(f"{name} (its own format): {json.dumps(report, ensure_ascii=False)}")
    print(f"\n== all benchmarks ({args.size}), {started_at:%Y-%m-%d %H:%M} UTC")
    print(table(rows))
    if failed:
        print(f"FAILED to run: {', '.join(failed)}")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(combined, indent=2, ensure_ascii=False) + "\n")
        print(f"written: {out}")
    print(json.dumps(combined, ensure_ascii=False), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    stop_on_signals()
    raise SystemExit(main())
