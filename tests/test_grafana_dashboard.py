"""The Grafana dashboard only queries metrics the code exports (checked statically)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from api import metrics as gateway_metrics
from common import metrics as worker_metrics

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "durable-chat.json"
# Metric families of the Temporal SDK's runtime the dashboard uses (SDK-defined names).
SDK_METRICS = {
    "temporal_activity_schedule_to_start_latency",
    "temporal_workflow_task_schedule_to_start_latency",
    "temporal_worker_task_slots_used",
}


def _ours() -> set[str]:
    names = {v for k, v in vars(worker_metrics).items() if k.isupper() and isinstance(v, str)}
    for metric in (gateway_metrics.REQUESTS, gateway_metrics.LATENCY, gateway_metrics.OPEN_STREAMS):
        names.add(metric._name)
    return names


def test_every_queried_metric_is_exported() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert exprs
    known = _ours() | SDK_METRICS
    for expr in exprs:
        for name in re.findall(r"\b((?:durable_chat|temporal)_[a-z_]+)", expr):
            base = re.sub(r"_(bucket|total|count|sum)$", "", name)
            assert base in known or name in known, f"{name} is not exported ({expr})"
