"""The FastAPI application: `uvicorn api.main:app` or `python -m api`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import structlog
from fastapi import FastAPI
from temporalio.client import Client

from api.auth import load_api_keys
from api.errors import install_error_handlers
from api.events import ChatEventHub
from api.metrics import install_metrics
from api.routes import (
    chat_completions,
    codec,
    conversations,
    events,
    health,
    responses,
    stats,
    workflows,
)
from common.codec import data_converter
from common.log import configure_logging
from common.settings import Settings, get_settings
from storage import (
    AnswerCacheStore,
    ChatStore,
    LimitsStore,
    ResponseStore,
    create_pool,
    wait_for_schema,
)

log = structlog.get_logger("gateway")


async def _wait_for_schema(app: FastAPI, dsn: str) -> None:
    """Wait in the background for the schema (the migrator applies it, `python -m
    storage.migrate`); /readyz answers 503 until it is complete."""
    while True:
        try:
            await wait_for_schema(dsn)
            app.state.schema_ready = True
            # Only now: before the migrator created the database, every LISTEN attempt
            # would be refused (and logged by PostgreSQL).
            app.state.listening = asyncio.create_task(app.state.hub.run())
            return
        except Exception as err:  # e.g. a changed migration: say so, keep the 503
            log.error("schema not usable", error=str(err))
            await asyncio.sleep(10.0)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.check_models()  # an allowed model without a price: refuse to start

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # lazy: the gateway starts (and answers /healthz, 503s) while Temporal is down.
        app.state.temporal = await Client.connect(
            settings.temporal_address,
            namespace=settings.temporal_namespace,
            lazy=True,
            data_converter=data_converter(app.state.codec),
        )
        pool = await create_pool(settings.database_url)
        app.state.store = ChatStore(pool)
        app.state.answer_cache = AnswerCacheStore(pool)
        app.state.limits = LimitsStore(pool)
        app.state.responses = ResponseStore(pool)
        app.state.hub = ChatEventHub(settings.database_url)
        app.state.schema_ready = False
        app.state.listening = None
        preparing = asyncio.create_task(_wait_for_schema(app, settings.database_url))
        log.info("gateway ready", temporal=settings.temporal_address, port=settings.gateway_port)
        try:
            yield
        finally:
            for task in (preparing, app.state.listening):
                if task is None:
                    continue
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
            await pool.close()

    app = FastAPI(
        title="durable-chat gateway",
        version="0.1.0",
        description=(
            "Starts durable LLM chats on Temporal, reports their progress and serves their "
            "checkpointed chunks by cursor."
        ),
        lifespan=lifespan,
        # A body larger than the largest valid prompt (UTF-8, JSON-escaped) is refused
        # with 413 before it is read into memory.
        max_body_size=settings.max_prompt_chars * 6 + 64 * 1024,
    )
    app.state.settings = settings
    app.state.api_keys = load_api_keys(settings)
    app.state.codec = settings.payload_codec()
    install_error_handlers(app)
    install_metrics(app)
    app.include_router(health.router)
    app.include_router(workflows.router)
    app.include_router(conversations.router)
    app.include_router(events.router)
    app.include_router(stats.router)
    app.include_router(responses.router)
    app.include_router(chat_completions.router)
    app.include_router(codec.router)
    return app


def main() -> None:
    import uvicorn

    configure_logging("gateway")
    settings = get_settings()
    try:
        app = create_app(settings)
    except ValueError as err:  # a configuration a person must fix: say so, exit 2
        log.error("gateway cannot start", error=str(err))
        raise SystemExit(2) from err
    uvicorn.run(
        app,
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
