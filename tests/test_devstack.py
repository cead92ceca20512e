"""`make up` (python -m devstack up): the whole stack, and kill -9 of one worker."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil

from devstack.stack import temporal_cli
from testing.stack import ROOT, free_port, http_ok, wait_until
from tests.browser.harness import CHROMIUM, CHROMIUM_ARGS

PROMPT = "Purple elephants negotiate durable treaties"


def _workers(root: psutil.Process) -> list[psutil.Process]:
    found = []
    for child in root.children(recursive=True):
        try:
            if "worker.py" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def test_up_runs_the_stack_and_survives_kill_9_of_a_worker(tmp_path: Path) -> None:
    ports = {
        name: str(free_port())
        for name in (
            "GATEWAY_PORT", "UI_PORT", "TEMPORAL_PORT", "TEMPORAL_UI_PORT",
            "SIMULATOR_PORT", "POSTGRES_PORT",
        )
    }  # fmt: skip
    env = {**os.environ, **ports, "DATA_DIR": str(tmp_path / "data"), "WORKERS": "2"}
    for name in ("DATABASE_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        env.pop(name, None)
    log_path = tmp_path / "up.log"
    with log_path.open("wb") as log:
        up = subprocess.Popen(
            [sys.executable, "-m", "devstack", "up"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    gateway = f"http://127.0.0.1:{ports['GATEWAY_PORT']}"
    root = psutil.Process(up.pid)
    descendants: list[psutil.Process] = []
    try:
        wait_until(
            lambda: "durable-chat is up" in log_path.read_text(errors="replace"), 180, "banner"
        )
        banner = log_path.read_text(errors="replace")
        assert f"http://localhost:{ports['GATEWAY_PORT']}" in banner
        assert f"http://localhost:{ports['TEMPORAL_UI_PORT']}" in banner
        assert f"http://localhost:{ports['UI_PORT']}" in banner and "login: dev / " in banner
        assert http_ok(f"http://127.0.0.1:{ports['UI_PORT']}/login")

        descendants = root.children(recursive=True)
        workers = wait_until(lambda: len(_workers(root)) == 2 and _workers(root), 60, "two workers")
        # The supervised processes are circusd's children (their own children, such as
        # PostgreSQL's per-connection backends, come and go with connections).
        circusd = root.children()[0]

        def migrator_done() -> bool:  # the one-shot migrate step has run and exited
            running = [
                p for p in circusd.children() if _alive(p) and "storage.migrate" in _cmdline(p)
            ]
            return not running and "schema up to date" in log_path.read_text(errors="replace")

        wait_until(migrator_done, 60, "the migrator to finish")
        # The one-shot migrator is supervised too, but it is meant to have exited.
        supervised = {
            p.pid for p in circusd.children() if _alive(p) and "storage.migrate" not in _cmdline(p)
        }
        others = supervised - {w.pid for w in workers}
        victim = workers[0]
        os.kill(victim.pid, signal.SIGKILL)

        # The rest of the stack keeps running, and the dead worker is replaced.
        def replaced() -> list[psutil.Process] | None:
            now = _workers(root)  # one look: the three checks must be of the same moment
            return now if len(now) == 2 and victim.pid not in {w.pid for w in now} else None

        respawned = wait_until(replaced, 30, "worker respawned")
        assert up.poll() is None
        alive_now = {p.pid for p in circusd.children()}
        assert others <= alive_now, "killing one worker must not stop any other process"
        assert len(respawned) == 2
        assert http_ok(f"{gateway}/readyz")

        # And the fleet still answers, to the developer key make up printed.
        key = json.loads((tmp_path / "data" / "credentials.json").read_text())["dev_api_key"]
        assert key in banner
        auth = {"Authorization": f"Bearer {key}"}
        assert httpx.get(f"{gateway}/api/stats").status_code == 401
        started = httpx.post(
            f"{gateway}/api/workflows/start",
            json={"prompt": PROMPT, "max_tokens": 30},
            headers=auth,
        ).json()
        status = wait_until(
            lambda: (
                httpx.get(
                    f"{gateway}/api/workflows/{started['workflow_id']}/status", headers=auth
                ).json()
                if httpx.get(
                    f"{gateway}/api/workflows/{started['workflow_id']}/status", headers=auth
                ).json()["status"]
                == "completed"
                else None
            ),
            60,
            "chat completed",
        )
        assert status["progress"] == 100
        # The chat is stored encrypted, and the Temporal UI shows it readable: make up
        # points the dev server's UI at the gateway's codec endpoint.
        show = subprocess.run(
            [
                temporal_cli(), "workflow", "show", "--output", "json",
                "--address", f"127.0.0.1:{ports['TEMPORAL_PORT']}",
                "--workflow-id", started["workflow_id"],
            ],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        assert PROMPT not in show.stdout and base64.b64encode(PROMPT.encode()).decode()[
            :20
        ] not in (show.stdout)
        assert "binary/encrypted" in show.stdout or "YmluYXJ5L2VuY3J5cHRlZA" in show.stdout
        ui = f"http://localhost:{ports['TEMPORAL_UI_PORT']}"
        assert _temporal_ui_shows(ui, started["workflow_id"], PROMPT)
    finally:
        descendants = root.children(recursive=True) if up.poll() is None else descendants
        os.killpg(up.pid, signal.SIGINT)  # what Ctrl-C does (to the foreground group)
        try:
            up.wait(timeout=60)
        finally:
            for process in descendants:
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    process.kill()
    assert up.returncode == 0
    leftovers = [
        p.pid for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    ]
    assert leftovers == [], "Ctrl-C must stop every process of the stack"


def _temporal_ui_shows(ui: str, workflow_id: str, text: str) -> bool:
    """Whether the Temporal Web UI's page of the workflow shows `text` (decoded in the
    browser through the codec endpoint), in Debian's Chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{ui}/namespaces/default/workflows/{workflow_id}")
            page.get_by_text(text, exact=False).first.wait_for(timeout=30_000)
            return True
        finally:
            browser.close()


def _alive(process: psutil.Process) -> bool:
    """Running, not an exited process its parent has not reaped yet (the migrator)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _cmdline(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""
