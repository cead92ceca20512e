"""The UI's password users: a file of names and scrypt hashes, never a password.

`UI_USERS_FILE` is a JSON object `{"alice": "scrypt$16384$8$1$<salt>$<hash>", ...}`.
Add or change a user with

    .venv/bin/python -m ui.users add alice --file .data/ui-users.json

(the password is read from the terminal, or from standard input when it is not one).
The single `UI_USERNAME` / `UI_PASSWORD` login of the environment still works beside
the file. Passwords are checked in constant time; an unknown user costs a hash too, so
the answer time does not tell which names exist.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import hmac
import json
import os
import re
import sys
from pathlib import Path

_N, _R, _P = 2**14, 8, 1
_NAME = re.compile(r"^[A-Za-z0-9._@-]{1,100}$")
# Checked against when the user is unknown, so that path costs the same.
_DUMMY = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 43 + "="


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    encoded = (base64.b64encode(part).decode() for part in (salt, digest))
    return f"scrypt${_N}${_R}${_P}$" + "$".join(encoded)


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
            dklen=len(expected),
        )  # fmt: skip
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def load_users(path: Path | None) -> dict[str, str]:
    """name -> hash from `path` (none when unset or missing)."""
    if path is None or not path.exists():
        return {}
    users = json.loads(path.read_text())
    if not isinstance(users, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v.startswith("scrypt$")
        for k, v in users.items()
    ):
        raise ValueError(f"{path}: expected a JSON object of user names and scrypt hashes")
    return users


def check_login(users: dict[str, str], name: str, password: str) -> bool:
    """Whether `password` is `name`'s, in the time a hash takes either way."""
    stored = users.get(name)
    ok = verify_password(password, stored or _DUMMY)
    return stored is not None and ok


def add_user(path: Path, name: str, password: str) -> None:
    if not _NAME.match(name):
        raise ValueError("a user name is 1-100 letters, digits or . _ @ -")
    if len(password) < 8:
        raise ValueError("a password has at least 8 characters")
    users = load_users(path)
    users[name] = hash_password(password)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(users, indent=2, sort_keys=True))
    path.chmod(0o600)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ui.users", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="add a user, or set a user's password")
    add.add_argument("name")
    add.add_argument(
        "--file", type=Path, default=Path(os.environ.get("UI_USERS_FILE", ".data/ui-users.json"))
    )
    args = parser.parse_args(argv)
    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.name}: ")
    else:
        password = sys.stdin.readline().rstrip("\n")
    try:
        add_user(args.file, args.name, password)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.name} can log in (users in {args.file}; the UI reads it at each login)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
