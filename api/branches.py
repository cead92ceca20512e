"""A conversation as a tree of chats: branches, versions and continuations (issue 18).

Every chat of a conversation names the chat whose answer it follows (`parent_id`).
Regenerate and edit make another child of the same parent (a new *version* of that turn,
`variant_of` the first one); continue makes a child that carries its parent's cut or
stopped answer on (`continues`), shown and sent to the LLM as one answer with it. The
*branch* a user is on runs from the first turn to the conversation's head (the chat
they last started or chose; the latest chat when they never chose). Nothing is ever
deleted: the other branches stay and can be chosen again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from common.models import Stage, Turn
from storage import TurnNode

# Answers a later turn carries as context: completed ones, and stopped ones as shown.
_IN_CONTEXT = frozenset({Stage.COMPLETED, Stage.STOPPED})

CONTINUE_PROMPT = (
    "Continue your previous answer exactly where it stopped, from its last word: do not "
    "repeat anything already written and do not add an introduction."
)


@dataclass(frozen=True)
class BranchTurn:
    """One turn of the branch: its first chat, the chats that continue it, its versions."""

    chat: TurnNode
    continued_by: list[TurnNode]
    versions: list[str]


class Conversation:
    """The chats of one user's conversation, oldest first."""

    def __init__(self, nodes: Sequence[TurnNode], head_id: str | None) -> None:
        self.nodes = {n.workflow_id: n for n in nodes}
        self._order = [n.workflow_id for n in nodes]
        self.stored_head = head_id
        """The head as chosen, even when its chat has no record yet."""
        self.head_id = head_id if head_id in self.nodes else (self._order[-1] if nodes else None)

    def children(self, workflow_id: str | None) -> list[TurnNode]:
        return [self.nodes[i] for i in self._order if self.nodes[i].parent_id == workflow_id]

    def path(self, to: str | None) -> list[TurnNode]:
        """The chats from the first turn down to `to` (included), oldest first."""
        path: list[TurnNode] = []
        seen: set[str] = set()
        while to is not None and to in self.nodes and to not in seen:
            seen.add(to)
            path.append(self.nodes[to])
            to = self.nodes[to].parent_id
        return path[::-1]

    def latest_leaf_under(self, workflow_id: str) -> str:
        """Choosing a version: the branch goes on down its most recent descendants."""
        current = workflow_id
        while children := self.children(current):
            current = children[-1].workflow_id
        return current

    def turn_root(self, workflow_id: str) -> TurnNode:
        """The chat a continuation chain starts from."""
        node = self.nodes[workflow_id]
        while node.continues is not None and node.continues in self.nodes:
            node = self.nodes[node.continues]
        return node

    def versions(self, node: TurnNode) -> list[str]:
        """The versions of `node`'s turn (itself included): its parent's children that
        are not continuations, oldest first."""
        return [c.workflow_id for c in self.children(node.parent_id) if c.continues is None]

    def branch(self) -> list[BranchTurn]:
        """The turns of the current branch, each with its continuations and versions."""
        turns: list[BranchTurn] = []
        for node in self.path(self.head_id):
            if node.continues is not None and turns:
                turns[-1].continued_by.append(node)
            else:
                turns.append(BranchTurn(node, [], self.versions(node)))
        return turns


def context(path: Sequence[TurnNode], answers: dict[str, str]) -> list[Turn]:
    """The LLM messages of a branch: each turn's prompt and its answer, a continuation's
    text joined to the answer it continues. Turns that did not end with an answer
    (failed, cancelled before any text) are left out."""
    turns: list[Turn] = []
    for node in path:
        if node.stage not in _IN_CONTEXT:
            continue
        answer = answers.get(node.workflow_id, "")
        if node.continues is not None and turns and turns[-1].role == "assistant":
            turns[-1] = Turn(role="assistant", content=turns[-1].content + answer)
        else:
            turns += [
                Turn(role="user", content=node.prompt),
                Turn(role="assistant", content=answer),
            ]
    return turns


def continuable(node: TurnNode) -> bool:
    """An answer that was cut at the token limit or stopped can be continued."""
    return node.stage is Stage.STOPPED or (
        node.stage is Stage.COMPLETED and node.finish_reason == "length"
    )
