"""The seed's MVP, for scale: chats without Temporal, one asyncio task each.

Each task does what a chat does, in one process and without durability: record the
generation row, stream the answer from the LLM (publishing live `delta` rows like the
real worker), split it into the same chunks, then insert them one after the other,
each with its `chunk` event, and mark the chat completed. Rows are written with the
application's own queries (`storage.ChatStore`) into a separate schema (`bench_mvp`,
created by `create_schema`), never into the application's tables.

Run by bench/concurrency.py as a child process, so its memory can be sampled alone:

    python -m bench.mvp --dsn DSN --simulator-url URL --specs FILE [--schema bench_mvp]

`FILE` is a JSON list of {workflow_id, prompt, max_tokens, chunk_target_chars}; the
child prints one JSON line when every chat is done.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, cast

import asyncpg
import openai
import structlog
from openai.types.chat import ChatCompletionMessageParam

from activities.drafts import DraftPublisher
from common.chunking import split_into_chunks
from common.models import GenerationUpdate, Stage
from common.prompts import check_prompt
from storage import ChatStore
from storage.pool import keep_session_state

SCHEMA = "bench_mvp"
MODEL = "simulator"
TEMPERATURE = 0.7


async def create_schema(db: asyncpg.Pool | asyncpg.Connection, schema: str = SCHEMA) -> None:
    """A copy of the application's chat tables (columns, defaults, keys, indexes, foreign
    keys) in `schema`, empty; the application's tables are not touched."""
    await db.execute(
        f"""
        DROP SCHEMA IF EXISTS {schema} CASCADE;
        CREATE SCHEMA {schema};
        CREATE TABLE {schema}.generations (LIKE public.generations INCLUDING ALL);
        CREATE TABLE {schema}.chunks (
            LIKE public.chunks INCLUDING ALL,
            FOREIGN KEY (workflow_id) REFERENCES {schema}.generations ON DELETE CASCADE);
        CREATE TABLE {schema}.chat_events (
            LIKE public.chat_events INCLUDING ALL,
            FOREIGN KEY (workflow_id) REFERENCES {schema}.generations ON DELETE CASCADE);
        """
    )


async def one_chat(
    store: ChatStore, llm: openai.AsyncOpenAI, spec: dict[str, Any], worker: str
) -> None:
    workflow_id = spec["workflow_id"]
    prompt = spec["prompt"]
    await store.record_generation(
        GenerationUpdate(
            workflow_id,
            Stage.VALIDATING,
            user_id="anonymous",
            prompt=prompt,
            model=MODEL,
            provider="simulator",
        )
    )
    check_prompt(prompt, 32_000)
    await store.record_generation(GenerationUpdate(workflow_id, Stage.GENERATING))
    drafts = DraftPublisher(store, workflow_id, 1)
    parts: list[str] = []
    message = cast(ChatCompletionMessageParam, {"role": "user", "content": prompt})
    stream = await llm.chat.completions.create(
        model=MODEL,
        messages=[message],
        max_tokens=spec["max_tokens"],
        temperature=TEMPERATURE,
        stream=True,
        stream_options={"include_usage": True},
    )
    async with stream:
        async for event in stream:
            for choice in event.choices:
                if choice.delta.content:
                    parts.append(choice.delta.content)
                    await drafts.add(choice.delta.content)
    await drafts.flush()
    chunks = split_into_chunks("".join(parts), spec["chunk_target_chars"])
    await store.record_generation(
        GenerationUpdate(workflow_id, Stage.CHECKPOINTING, total_chunks=len(chunks))
    )
    for index, text in enumerate(chunks):
        await store.insert_chunk(workflow_id, index, text, worker, 1, len(chunks))
    await store.record_generation(GenerationUpdate(workflow_id, Stage.COMPLETED))


async def run(dsn: str, simulator_url: str, specs: list[dict[str, Any]], schema: str) -> None:
    # the same pool size and release policy as a worker's (worker.py, storage.pool)
    pool = await asyncpg.create_pool(
        dsn,
        min_size=0,
        max_size=20,
        server_settings={"search_path": schema},
        reset=keep_session_state,
    )
    llm = openai.AsyncOpenAI(base_url=simulator_url, api_key="bench", max_retries=0, timeout=120)
    store = ChatStore(pool)
    worker = f"mvp-{os.getpid()}@{socket.gethostname()}"
    started = time.time()
    results = await asyncio.gather(
        *(one_chat(store, llm, spec, worker) for spec in specs), return_exceptions=True
    )
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    await llm.close()
    await pool.close()
    document = {
        "chats": len(specs),
        "errors": errors,
        "wall_s": time.time() - started,
        "cpu_s": time.process_time(),  # this process's CPU, all of it
    }
    print(json.dumps(document))


def main() -> int:
    parser = argparse.ArgumentParser(description="chats without Temporal (bench baseline)")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--simulator-url", required=True, help="…/v1")
    parser.add_argument("--specs", type=Path, required=True)
    parser.add_argument("--schema", default=SCHEMA)
    args = parser.parse_args()
    # structlog (DraftPublisher's warnings) to stderr: stdout carries the JSON line
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    specs = json.loads(args.specs.read_text())
    asyncio.run(run(args.dsn, args.simulator_url, specs, args.schema))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
