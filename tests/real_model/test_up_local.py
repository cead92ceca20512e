"""`LLM=local python -m devstack up` (what `LLM=local make up` runs once `.[local]` is
installed): circus supervises llama-server instead of the simulator, and the workers and
the gateway use it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from devstack import local_llm
from testing.stack import ROOT, free_port, http_ok, wait_until

pytestmark = pytest.mark.real_model

PORTS = (
    "GATEWAY_PORT", "UI_PORT", "TEMPORAL_PORT", "TEMPORAL_UI_PORT",
    "SIMULATOR_PORT", "POSTGRES_PORT", "LLAMA_PORT",
)  # fmt: skip


def _commands(root: psutil.Process) -> dict[psutil.Process, str]:
    found = {}
    for child in root.children(recursive=True):
        try:
            found[child] = " ".join(child.cmdline())
        except psutil.NoSuchProcess:
            pass
    return found


def test_up_with_llm_local_runs_llama_server_instead_of_the_simulator(tmp_path: Path) -> None:
    ports = {name: str(free_port()) for name in PORTS}
    data_dir = tmp_path / "data"
    env = {**os.environ, **ports, "DATA_DIR": str(data_dir), "WORKERS": "2", "LLM": "local"}
    for name in ("DATABASE_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL", "LLM_MODEL"):
        env.pop(name, None)
    log_path = tmp_path / "up.log"
    with log_path.open("wb") as log:
        up = subprocess.Popen(
            [sys.executable, "-m", "devstack", "up"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    root = psutil.Process(up.pid)
    descendants: list[psutil.Process] = []
    gateway = f"http://127.0.0.1:{ports['GATEWAY_PORT']}"
    llama = f"http://127.0.0.1:{ports['LLAMA_PORT']}"
    try:
        wait_until(
            lambda: "durable-chat is up" in log_path.read_text(errors="replace"), 180, "banner"
        )
        wait_until(lambda: http_ok(f"{llama}/health"), 60, "llama-server healthy")
        descendants = root.children(recursive=True)
        commands = _commands(root)
        [server] = [p for p, cmd in commands.items() if "/llama-server " in cmd]
        assert not [cmd for cmd in commands.values() if "llm_simulator" in cmd]
        listening = {c.laddr for c in server.net_connections() if c.status == "LISTEN"}
        assert {(a.ip, a.port) for a in listening} == {("127.0.0.1", int(ports["LLAMA_PORT"]))}
        assert (data_dir / "models").is_dir()  # the model was assembled into DATA_DIR

        key = json.loads((data_dir / "credentials.json").read_text())["dev_api_key"]
        auth = {"Authorization": f"Bearer {key}"}
        started = httpx.post(
            f"{gateway}/api/workflows/start",
            json={"prompt": "Still there?", "max_tokens": 30},
            headers=auth,
        ).json()
        url = f"{gateway}/api/workflows/{started['workflow_id']}/status"

        def finished() -> dict[str, Any] | None:
            body: dict[str, Any] = httpx.get(url, headers=auth).json()
            return body if body["status"] in ("completed", "failed") else None

        status = wait_until(finished, 120, "chat finished")
        assert status["status"] == "completed", status
        assert status["model"] == local_llm.MODEL_ALIAS
        assert status["cost_usd"] == 0
        # The banner says which LLM answers (devstack/__main__.py prints
        # StackSettings.llm_summary).
        banner = log_path.read_text(errors="replace")
        [llm_line] = [line for line in banner.splitlines() if line.strip().startswith("LLM ")]
        assert "llama-server" in llm_line and ports["LLAMA_PORT"] in llm_line, llm_line
    finally:
        descendants = root.children(recursive=True) if up.poll() is None else descendants
        os.killpg(up.pid, signal.SIGINT)  # what Ctrl-C does
        try:
            up.wait(timeout=60)
        finally:
            for process in descendants:
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    process.kill()
    leftovers = [
        p.pid for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    ]
    assert leftovers == [], "Ctrl-C must stop every process of the stack, llama-server too"
