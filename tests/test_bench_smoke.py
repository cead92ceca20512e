"""Every benchmark under bench/ still runs: once each, at tiny size, as a subprocess.

Only the shape of the output is checked (exit status 0, a table, a last line of JSON
with the expected keys), never a timing: figures from a shared CI machine mean
nothing. The real figures are in docs/benchmarks.md (`make bench`).

Each benchmark starts its own stack; two run at a time (started when the first of
these tests needs them) to keep the module near a minute and a half.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from bench import run_all

ROOT = Path(__file__).resolve().parent.parent
REPORT_KEYS = {
    "benchmark",
    "size",
    "date",
    "command",
    "baseline",
    "figures",
    "details",
    "settings",
    "simulator_env",
    "machine",
}
FIGURE_KEYS = {"figure", "measured", "baseline", "unit", "goal", "met", "baseline_is"}
DETAIL_KEYS = {
    "ttft": {"simulator_ttft_ms", "gateway_ttft_from_post_sent_ms", "overhead_ms", "breakdown_ms"},
    "checkpoints": {"phase_ms", "baseline_phase_ms", "chunks_per_answer", "checkpoint_window"},
    "recovery": {"no kill", "kill -9", "SIGTERM", "checkpoint_window"},
    "concurrency": {"temporal", "mvp", "temporal_alone", "chats", "chunks_per_chat"},
    "reconnect": {"reconnect_ms", "fresh_connection_ms"},
    "load": {"3_chats", "5_chats", "backlog", "provider_api"},
}


def _last_json_line(stdout: str) -> dict[str, Any]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert lines, "no output"
    document: dict[str, Any] = json.loads(lines[-1])
    return document


def _run_tiny(name: str, out: Path) -> subprocess.CompletedProcess[str]:
    extra = [] if name in run_all.EXTRA_BENCHMARKS else ["--json-out", str(out)]
    return subprocess.run(
        [sys.executable, "-m", f"bench.{name}", "--size", "tiny", *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


@pytest.fixture(scope="module")
def tiny_runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, tuple[Future[subprocess.CompletedProcess[str]], Path]]]:
    """Every benchmark at tiny size, two at a time, each in its own subprocess."""
    out_dir = tmp_path_factory.mktemp("bench")
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield {
            name: (pool.submit(_run_tiny, name, out_dir / f"{name}.json"), out_dir / f"{name}.json")
            for name in (*run_all.BENCHMARKS, *run_all.EXTRA_BENCHMARKS)
        }


@pytest.mark.parametrize("name", run_all.BENCHMARKS)
def test_benchmark_runs_at_tiny_size(
    name: str, tiny_runs: dict[str, tuple[Future[subprocess.CompletedProcess[str]], Path]]
) -> None:
    future, out = tiny_runs[name]
    done = future.result(timeout=280)
    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-5000:]}"
    report = _last_json_line(done.stdout)
    assert json.loads(out.read_text()) == report

    assert REPORT_KEYS <= set(report)
    assert report["benchmark"] == name and report["size"] == "tiny"
    assert "figure" in done.stdout and "measured" in done.stdout  # the table came first
    assert report["figures"], "no figure"
    for figure in report["figures"]:
        assert FIGURE_KEYS <= set(figure)
        assert figure["met"] in (True, False, None)
    # something was measured (a number, whatever its value)
    assert any(isinstance(f["measured"], int | float) for f in report["figures"])
    assert DETAIL_KEYS[name] <= set(report["details"])
    assert report["machine"]["nproc"] >= 1
    assert "CHECKPOINT_WINDOW" in report["settings"]


@pytest.mark.parametrize("name", run_all.EXTRA_BENCHMARKS)
def test_other_benchmark_runs_at_tiny_size(
    name: str, tiny_runs: dict[str, tuple[Future[subprocess.CompletedProcess[str]], Path]]
) -> None:
    """Scripts under bench/ with their own report format: exit 0, a last line of JSON."""
    done = tiny_runs[name][0].result(timeout=280)
    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-5000:]}"
    assert _last_json_line(done.stdout)["benchmark"] == name


def test_run_all_combines_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """run_all's own part (the subprocesses are the test above): combine, table, JSON."""

    def fake_run_one(name: str, size: str) -> dict[str, Any]:
        if name == "recovery":
            return {"benchmark": name, "size": size, "error": "exit status 1"}
        figure = {
            "figure": "f",
            "measured": 1.0,
            "baseline": 2.0,
            "unit": "ms",
            "goal": "≤ 2 ms",
            "met": True,
            "baseline_is": "",
        }
        return {"benchmark": name, "size": size, "figures": [figure]}

    monkeypatch.setattr(run_all, "run_one", fake_run_one)
    out = tmp_path / "all.json"
    code = run_all.main(["--size", "tiny", "--out", str(out), "--only", "ttft,recovery"])
    assert code == 1  # recovery "failed"
    combined = json.loads(out.read_text())
    assert combined["failed"] == ["recovery"]
    assert set(combined["results"]) == {"ttft", "recovery"}
    printed = capsys.readouterr().out
    assert "ttft: f" in printed
    assert _last_json_line(printed) == combined
