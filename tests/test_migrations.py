"""Migrations: applied once by the migrator, refused when an applied one was edited,
waited for (never applied) by the workers and the gateway."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid

import asyncpg
import pytest

from storage.migrate import MigrationError, apply_migrations, migrations, wait_for_schema
from testing.stack import ROOT, LocalStack


def _fresh_database(stack: LocalStack) -> str:
    base = stack.database_url.rsplit("/", 1)[0]
    return f"{base}/migrations_{uuid.uuid4().hex[:10]}"


async def _migrator(dsn: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "storage.migrate", "--wait", "30",
        env={**os.environ, "DATABASE_URL": dsn, "LOG_FORMAT": "json"},
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await process.communicate()
    return process.returncode or 0, out.decode()


async def test_two_migrators_at_a_first_start_apply_each_migration_once(
    stack: LocalStack,
) -> None:
    dsn = _fresh_database(stack)
    results = await asyncio.gather(_migrator(dsn), _migrator(dsn))
    assert [code for code, _ in results] == [0, 0], results
    output = "".join(out for _, out in results)
    assert "does not exist" not in output and "duplicate key" not in output
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations ORDER BY 1")
    finally:
        await conn.close()
    assert [(r["version"], r["checksum"]) for r in rows] == [
        (m.version, m.checksum) for m in migrations()
    ]


async def test_a_changed_applied_migration_is_refused(stack: LocalStack) -> None:
    dsn = _fresh_database(stack)
    code, out = await _migrator(dsn)
    assert code == 0, out
    conn = await asyncpg.connect(dsn)
    try:  # as if 0003's file had been edited after it was applied
        await conn.execute(
            "UPDATE schema_migrations SET checksum = 'edited' WHERE version LIKE '0003%'"
        )
    finally:
        await conn.close()
    with pytest.raises(MigrationError, match="0003"):
        await apply_migrations(dsn)
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await wait_for_schema(dsn, timeout_s=5)
    code, out = await _migrator(dsn)
    assert code == 1 and "changed after it was applied" in out


async def test_processes_wait_for_the_schema_and_never_apply_it(stack: LocalStack) -> None:
    dsn = _fresh_database(stack)
    waiting = asyncio.create_task(wait_for_schema(dsn))
    await asyncio.sleep(1.5)  # the database does not even exist yet: it keeps waiting
    assert not waiting.done()
    code, out = await _migrator(dsn)
    assert code == 0, out
    await asyncio.wait_for(waiting, timeout=10)
