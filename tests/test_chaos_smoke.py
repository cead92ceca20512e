"""Every chaos scenario at a tiny size (3 chats): the invariants, not the timings.

The same runner as `make chaos` (`python -m chaos`), on a stack of its own (the
scenarios stop PostgreSQL and Temporal, which the session stack of the other tests must
not suffer). Each scenario must end with every chat completed, no chunk lost or
duplicated (PostgreSQL, SSE transcript, chunks by cursor), every event of the chat's
log delivered once, and one LLM generation per chat (resume mode). In the operator
scenarios the chats the operator terminated end `terminated` instead (with a beginning
of their answer), and a chat reset to before its LLM call has exactly two generations.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos.harness import RunConfig, run_scenario
from chaos.scenarios import SCENARIOS
from chaos.stack import ChaosStack

CHATS = int(os.environ.get("CHAOS_SMOKE_CHATS", "3"))
SEED = int(os.environ.get("CHAOS_SEED", str(random.SystemRandom().randrange(1, 1_000_000))))
CONFIG = RunConfig(
    chats=CHATS,
    seed=SEED,
    mode="resume",
    min_tokens=150,
    max_tokens=300,
    stagger_s=1.0,
    deadline_s=150.0,
    pg_downtime_s=2.0,
)


@pytest.fixture(scope="module")
def chaos_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosStack]:
    stack = ChaosStack(Path(tmp_path_factory.mktemp("chaos")), mode="resume")
    try:
        stack.start()
        yield stack
    except BaseException:
        for process in stack.local.processes:
            print(f"--- {process.name}\n{process.log_tail(40)}")
        raise
    finally:
        stack.stop()


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_scenario_keeps_every_chat_whole(chaos_stack: ChaosStack, name: str) -> None:
    result = await run_scenario(chaos_stack, SCENARIOS[name], CONFIG, log=print)
    context = f"seed {SEED} (CHAOS_SEED={SEED} to rerun), fault {result.fault}"
    terminated_by_operator = result.operator.get("actions", {}).get("terminate", 0)
    assert result.terminated == terminated_by_operator, f"{result.failures}; {context}"
    # result.chats: operator-reset starts one chat of its own on top of the CHATS.
    assert result.completed == result.chats - terminated_by_operator, (
        f"{result.failures}; {context}"
    )
    assert result.chunks_lost == 0 and result.chunks_duplicated == 0, result.failures
    assert result.events_lost == 0 and result.events_duplicated == 0, result.failures
    assert result.generations_unexpected == {}, result.failures
    if name.startswith("operator-"):
        assert result.operator["chats"] >= 1, f"the operator did nothing; {context}"
        assert result.operator["chats_ok"] == result.operator["chats"], result.failures
        assert result.operator["running_after"] == 0, result.failures
    else:
        assert result.generations_max == 1 and result.generations_mean == 1, result.failures
    assert result.passed, f"{result.failures}; {context}"
