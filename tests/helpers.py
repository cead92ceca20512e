"""Helpers of the test suite only: the recorded histories the replay test keeps.

Everything else the tests use to start, drive and check the stack is in `testing/`,
shared with the benchmarks, the chaos runs and the capacity measurements.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

HISTORIES_DIR = Path(__file__).parent / "histories"
# Histories recorded now are named `<version>-<scenario>.json`; older versions' files
# stay (see docs/upgrades.md). Bump it when a release changes the workflow's commands.
HISTORY_VERSION = "v8"


async def keep_history(handle: Any, scenario: str) -> None:
    """With UPDATE_HISTORIES=1, store this run's history as
    tests/histories/<HISTORY_VERSION>-<scenario>.json, so the replay test checks every
    later code change against it."""
    if os.environ.get("UPDATE_HISTORIES") != "1":
        return
    history = await handle.fetch_history()
    HISTORIES_DIR.mkdir(exist_ok=True)
    (HISTORIES_DIR / f"{HISTORY_VERSION}-{scenario}.json").write_text(history.to_json())
