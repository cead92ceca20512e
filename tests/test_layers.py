"""Dependencies point one way (README, "Which package may import which"): a new import
against the rule fails here, with the file and the import."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# package -> the packages of ours it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "common": set(),
    "storage": {"common"},
    "activities": {"common", "storage"},
    "workflows": {"common", "activities"},  # activities: method references for the sandbox
    "api": {"common", "storage"},  # starts and queries workflows by name (common.contract)
    "ui": set(),  # a client of the gateway's HTTP API only
    "llm_simulator": set(),
    "devstack": {"common", "storage", "ui"},  # ui.users: make up writes the dev login
    "worker": {"common", "storage", "activities", "workflows"},
    # what tests, bench, chaos and deploy/capacity use; nothing shipped may import it
    "testing": {"common", "storage", "activities", "workflows", "devstack", "llm_simulator"},
}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_every_package_imports_only_what_the_rule_allows() -> None:
    broken: list[str] = []
    for package, allowed in ALLOWED.items():
        files = [ROOT / "worker.py"] if package == "worker" else (ROOT / package).rglob("*.py")
        for path in files:
            ours = _imports(path) & set(ALLOWED) - {package}
            for name in sorted(ours - allowed):
                broken.append(f"{path.relative_to(ROOT)} imports {name}")
    assert broken == []
