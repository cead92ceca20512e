"""PostgreSQL access: the connection pool, versioned migrations and every query.

All SQL of durable-chat lives in this package, parameterised; nothing else
formats a query.
"""

from storage.answer_cache import AnswerCacheStore, CachedAnswer, ClaimResult, Totals
from storage.chats import EVENTS_CHANNEL, ChatEvent, ChatStore, ChunkRow, GenerationRow, TurnNode
from storage.limits import LimitsStore
from storage.llm_calls import LlmCallStore, OpenCall
from storage.migrate import MigrationError, apply_migrations, wait_for_schema
from storage.pool import create_pool
from storage.responses import ResponseRow, ResponseStore

__all__ = [
    "EVENTS_CHANNEL",
    "AnswerCacheStore",
    "CachedAnswer",
    "ChatEvent",
    "ChatStore",
    "ChunkRow",
    "ClaimResult",
    "GenerationRow",
    "LimitsStore",
    "LlmCallStore",
    "MigrationError",
    "OpenCall",
    "ResponseRow",
    "ResponseStore",
    "Totals",
    "TurnNode",
    "apply_migrations",
    "create_pool",
    "wait_for_schema",
]
