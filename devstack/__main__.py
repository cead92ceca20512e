"""`python -m devstack up`: run the whole stack in this terminal (what `make up` does)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from devstack.stack import LocalCredentials, StackSettings, circus_config


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 180) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def _banner(settings: StackSettings, login: LocalCredentials) -> str:
    llm = settings.llm_summary
    lines = [
        "",
        "durable-chat is up",
        f"  Chat UI         http://localhost:{settings.ui_port}  "
        f"(login: {login.username} / {login.password})",
        "  More UI users   .venv/bin/python -m ui.users add NAME "
        f"--file {login.users_file(settings)}",
        f"  Gateway API     http://localhost:{settings.gateway_port}  (docs: /docs, "
        "OpenAI-compatible: /v1)",
        f"  API key         {login.dev_api_key}  (header: Authorization: Bearer <key>)",
        f"  Temporal UI     http://localhost:{settings.temporal_ui_port}",
        f"  Temporal gRPC   127.0.0.1:{settings.temporal_port}",
        f"  PostgreSQL      {settings.database_url or settings.embedded_database_url}",
        f"  LLM             {llm}",
        f"  Workers         {settings.workers} (kill one with kill -9: it is restarted, "
        "its chats resume elsewhere)",
        f"  Stop            Ctrl-C (data stays in {settings.data_dir}/; `make up` again resumes)",
        "",
    ]
    return "\n".join(lines)


def up() -> int:
    settings = StackSettings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    config_file = settings.data_dir / "circus.ini"
    login = LocalCredentials.for_stack(settings)
    config_file.write_text(circus_config(settings, Path.cwd(), login))
    # circusd gets its own session, so exactly one stop signal reaches it: ours.
    circusd = subprocess.Popen(
        [sys.executable, "-m", "circus.circusd", str(config_file)], start_new_session=True
    )

    def stop(signum: int, _frame: object) -> None:
        print("\nstopping durable-chat (every process is asked to finish cleanly)", flush=True)
        circusd.send_signal(signal.SIGINT)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    if _wait_ready(f"http://127.0.0.1:{settings.gateway_port}/readyz", circusd) and _wait_ready(
        f"http://127.0.0.1:{settings.ui_port}/login", circusd
    ):
        print(_banner(settings, login), flush=True)
    return circusd.wait()


def main() -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else "up"
    if command != "up":
        sys.exit("usage: python -m devstack up")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(up())


if __name__ == "__main__":
    main()
