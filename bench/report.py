"""Markdown tables from a run_all results file, for docs/benchmarks.md.

.venv/bin/python -m bench.report [bench/results/latest.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.figures import fmt
from bench.runner import RESULTS_DIR


def markdown(results: dict[str, Any]) -> str:
    machine = results["machine"]
    lines = [
        f"Run: {results['date']} → {results.get('finished', '?')} (UTC), "
        f"`{results['command']}`, git `{machine.get('git_head')}`"
        f"{' + uncommitted changes' if machine.get('git_tracked_changes') else ''}.",
        f"Machine: {machine['nproc']} cores ({machine['cpu_model']}), "
        f"{machine['memory_total']} RAM, load average at the end "
        f"{' / '.join(str(x) for x in machine['loadavg_1_5_15'])} (1/5/15 min).",
        "",
    ]
    for name, report in results["results"].items():
        lines.append(f"### {name}")
        if "error" in report:
            lines += [f"failed to run: {report['error']}", ""]
            continue
        if "figures" not in report:  # a script with its own format (bench/cache_hit.py)
            fields = ", ".join(f"`{k}` {v}" for k, v in report.items() if k != "benchmark")
            lines += [f"Its own report: {fields}.", ""]
            continue
        load = report["machine"].get("loadavg_before_1_5_15", ["?"])[0]
        contention = report.get("contention", {})
        others = contention.get("other_work_share_of_machine")
        lines.append(
            f"{report['date']} UTC, measured for {contention.get('wall_s', '?')} s; load average "
            f"{load} → {report['machine']['loadavg_1_5_15'][0]}"
            + ("" if others is None else f"; other work used {others:.0%} of the CPU")
            + f". Baseline: {report['baseline']}."
        )
        lines += [
            "",
            "| figure | measured | baseline | goal | met? |",
            "| --- | --- | --- | --- | --- |",
        ]
        for f in report["figures"]:
            met = {True: "**yes**", False: "**no**", None: "—"}[f["met"]]
            baseline = fmt(f["baseline"], f["unit"])
            if f.get("baseline_is"):
                baseline += f" ({f['baseline_is']})"
            lines.append(
                f"| {f['figure']} | {fmt(f['measured'], f['unit'])} | {baseline} | "
                f"{f['goal']} | {met} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else RESULTS_DIR / "latest.json"
    print(markdown(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
