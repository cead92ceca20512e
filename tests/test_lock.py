"""The install is the locked one, and Chainlit is the release migration 0002 copies.

requirements/*.txt (kept by `make lock`) pin every package; `make venv` installs them,
so the venv this suite runs in must hold exactly those versions. Migration 0002 creates
the tables of Chainlit's asyncpg data layer: if Chainlit's queries name a column that
0002 does not create, the UI breaks at runtime, so it is checked here against the
installed Chainlit's own SQL.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import tomllib
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
LOCKS = ("dev", "local", "runtime")


def _pins(lock: str) -> dict[str, str]:
    text = (ROOT / "requirements" / f"{lock}.txt").read_text()
    return {
        _normal(name): version
        for name, version in re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", text, re.MULTILINE)
    }


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(extras: tuple[str, ...] = ()) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in extras:
        specs += project["optional-dependencies"][extra]
    return {_normal(re.split(r"[\s<>=!~\[;]", spec, maxsplit=1)[0]) for spec in specs}


def test_every_declared_dependency_is_pinned_in_each_lock() -> None:
    for lock, extras in (("runtime", ()), ("dev", ("dev",)), ("local", ("dev", "local"))):
        missing = _declared(extras) - set(_pins(lock))
        assert not missing, f"requirements/{lock}.txt lacks {sorted(missing)}: run make lock"


def test_the_venv_holds_the_locked_versions() -> None:
    drift = {
        name: (version, installed)
        for name, version in _pins("dev").items()
        if (installed := importlib.metadata.version(name)) != version
    }
    assert drift == {}, "the venv differs from requirements/dev.txt: run make venv"


def test_chainlit_is_pinned_to_one_release_everywhere() -> None:
    pinned = {lock: _pins(lock)["chainlit"] for lock in LOCKS}
    assert set(pinned.values()) == {importlib.metadata.version("chainlit")}
    project = (ROOT / "pyproject.toml").read_text()
    assert f'"chainlit=={pinned["dev"]}"' in project, "pyproject must pin Chainlit exactly"


def _columns_chainlit_inserts() -> dict[str, set[str]]:
    """Table -> the columns the installed Chainlit's data layer inserts (its own SQL)."""
    # Importing Chainlit writes its config into CHAINLIT_APP_ROOT (default: the working
    # directory): point it at the UI's own.
    os.environ.setdefault("CHAINLIT_APP_ROOT", str(ROOT / "ui"))
    import chainlit.data.chainlit_data_layer as data_layer

    source = Path(data_layer.__file__).read_text()
    used: dict[str, set[str]] = {}
    for table, columns in re.findall(r'INSERT INTO "(\w+)" \(([^){]*)\)', source):
        used.setdefault(table, set()).update(c.strip().strip('"') for c in columns.split(","))
    return used


async def test_chainlits_queries_name_only_columns_migration_0002_creates(
    db: asyncpg.Pool,
) -> None:
    used = _columns_chainlit_inserts()
    assert {"User", "Feedback", "Element", "Step"} <= set(used), "Chainlit's SQL changed shape"
    rows = await db.fetch(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_name = ANY($1::text[])",
        list(used),
    )
    ours: dict[str, set[str]] = {}
    for row in rows:
        ours.setdefault(row["table_name"], set()).add(row["column_name"])
    missing = {t: sorted(cols - ours.get(t, set())) for t, cols in used.items()}
    assert all(not cols for cols in missing.values()), f"0002 lacks columns: {missing}"
