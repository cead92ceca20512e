"""/api/conversations: the branch of a conversation a user is on, and choosing another."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from api import branches, chats
from api.auth import CurrentUser
from api.branches import Conversation
from api.deps import StoreDep
from api.schemas import ERROR_RESPONSES, ChooseVersionBody, ConversationOut, TurnOut
from storage import ChatStore

router = APIRouter(prefix="/api/conversations", tags=["conversations"], responses=ERROR_RESPONSES)

ConversationId = Annotated[str, Path(pattern=r"^[A-Za-z0-9._:@-]{1,200}$")]


async def _out(
    store: ChatStore, conversation_id: str, conversation: Conversation
) -> ConversationOut:
    turns = conversation.branch()
    ids = [t.chat.workflow_id for t in turns] + [
        c.workflow_id for t in turns for c in t.continued_by
    ]
    answers = await chats.db_call(store.answers(ids))
    out: list[TurnOut] = []
    for turn in turns:
        last = turn.continued_by[-1] if turn.continued_by else turn.chat
        out.append(
            TurnOut(
                workflow_id=turn.chat.workflow_id,
                prompt=turn.chat.prompt,
                stage=last.stage.value,
                answer="".join(
                    answers.get(c.workflow_id, "") for c in [turn.chat, *turn.continued_by]
                ),
                continued_by=[c.workflow_id for c in turn.continued_by],
                versions=turn.versions,
                continuable=branches.continuable(last),
            )
        )
    return ConversationOut(conversation_id=conversation_id, head_id=conversation.head_id, turns=out)


@router.get("/{conversation_id}", response_model=ConversationOut)
async def conversation(
    conversation_id: ConversationId, user: CurrentUser, store: StoreDep
) -> ConversationOut:
    """The turns of the branch the user is on, each with its answer and its versions
    (an unknown conversation has none)."""
    loaded = await chats.load_conversation(store, conversation_id, user)
    return await _out(store, conversation_id, loaded)


@router.put("/{conversation_id}/head", response_model=ConversationOut)
async def choose(
    conversation_id: ConversationId, body: ChooseVersionBody, user: CurrentUser, store: StoreDep
) -> ConversationOut:
    """Switch to the branch through `workflow_id` (say, an earlier version of a turn),
    down its most recent turns. The next turn follows it."""
    chosen = await chats.choose_version(store, conversation_id, user, body.workflow_id)
    return await _out(store, conversation_id, chosen)
