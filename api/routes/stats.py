"""GET /api/stats: what the service did and what the answer cache saved."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Request

from api.auth import CurrentUser
from api.chats import db_call
from api.schemas import ERROR_RESPONSES, Stats
from storage import AnswerCacheStore

router = APIRouter(prefix="/api", tags=["stats"], responses=ERROR_RESPONSES)


@router.get("/stats", response_model=Stats)
async def stats(request: Request, _user: CurrentUser) -> Stats:
    """Totals: chats, LLM calls, cache hits, tokens, estimated cost and savings."""
    cache: AnswerCacheStore = request.app.state.answer_cache
    totals = await db_call(cache.totals())
    return Stats(**asdict(totals))
