"""`python -m chaos`: run the chaos scenarios and print the table (then one JSON line).

    python -m chaos [--scenario NAME|all] [--chats N] [--seed S] [--mode resume|restart]

Exit status 0 when every scenario held its invariants, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from chaos.harness import RunConfig, ScenarioResult, run_scenario
from chaos.report import operator_table, table
from chaos.scenarios import SCENARIOS
from chaos.stack import ChaosStack
from testing.machine import machine_info


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m chaos",
        description="Inject faults into a local durable-chat stack while chats run; "
        "check that every chat completes with nothing lost or duplicated.",
    )
    parser.add_argument(
        "--scenario",
        default="all",
        help=f"all, or a comma-separated list of: {', '.join(SCENARIOS)}",
    )
    parser.add_argument("--chats", type=int, default=20, help="chats per scenario (default 20)")
    parser.add_argument("--seed", type=int, default=None, help="RNG seed (default: random)")
    parser.add_argument("--mode", choices=("resume", "restart"), default="resume")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--pg-downtime", type=float, default=3.0, help="seconds PostgreSQL stays down"
    )
    parser.add_argument(
        "--deadline", type=float, default=240.0, help="seconds the chats get after the fault"
    )
    parser.add_argument("--json-out", type=Path, help="also write the JSON report here")
    parser.add_argument("--keep-workdir", action="store_true", help="keep data and logs")
    args = parser.parse_args(argv)
    if args.scenario == "all":
        args.scenarios = list(SCENARIOS)
    else:
        args.scenarios = [s.strip() for s in args.scenario.split(",") if s.strip()]
        unknown = [s for s in args.scenarios if s not in SCENARIOS]
        if unknown:
            parser.error(f"unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}")
    if args.chats < 1:
        parser.error("--chats must be at least 1")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 1_000_000)
    return args


async def run_suite(stack: ChaosStack, names: list[str], config: RunConfig) -> list[ScenarioResult]:
    results = []
    for name in names:
        scenario = SCENARIOS[name]
        print(f"[{name}] {scenario.title}: {config.chats} chats, mode {config.mode}", flush=True)
        result = await run_scenario(stack, scenario, config, log=lambda m: print(m, flush=True))
        verdict = "PASS" if result.passed else "FAIL: " + "; ".join(result.failures[:5])
        print(f"  {result.completed}/{result.chats} completed in {result.wall_s} s — {verdict}")
        if result.operator:
            print(f"  operator: {json.dumps(result.operator, default=str)}")
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = RunConfig(
        chats=args.chats,
        seed=args.seed,
        mode=args.mode,
        deadline_s=args.deadline,
        pg_downtime_s=args.pg_downtime,
    )
    print(f"chaos suite: seed {args.seed} (rerun with --seed {args.seed}), mode {args.mode}")
    workdir = Path(tempfile.mkdtemp(prefix="durable-chat-chaos-"))
    stack = ChaosStack(workdir, mode=args.mode, workers=args.workers)
    began = time.time()
    try:
        print(f"starting a stack in {workdir} ...", flush=True)
        stack.start()
        results = asyncio.run(run_suite(stack, args.scenarios, config))
    finally:
        stack.stop()
        if args.keep_workdir:
            print(f"logs and data kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(table(results))
    operators = operator_table(results)
    if operators:
        print()
        print(operators)
    report = {
        "command": "python -m chaos " + " ".join(argv if argv is not None else sys.argv[1:]),
        "seed": args.seed,
        "mode": args.mode,
        "chats": args.chats,
        "workers": args.workers,
        "simulator": stack.simulator_env,
        "app_env": stack.app_env,
        "machine": machine_info(),
        "wall_s": round(time.time() - began, 1),
        "passed": all(r.passed for r in results),
        "results": [r.to_json(with_chats=False) for r in results],
    }
    if args.json_out:
        full = {**report, "results": [r.to_json() for r in results]}
        args.json_out.write_text(json.dumps(full, indent=2, default=str))
    print(json.dumps(report, default=str))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
