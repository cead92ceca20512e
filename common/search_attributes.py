"""Custom search attributes that make chats filterable in the Temporal UI.

Registered by `make up` (`temporal server start-dev --search-attribute ...`), by the
test harness, and by the deployment's setup job (deploy/temporal/scripts).
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

CONVERSATION = SearchAttributeKey.for_keyword("ChatConversationId")
USER = SearchAttributeKey.for_keyword("ChatUserId")
STAGE = SearchAttributeKey.for_keyword("ChatStage")
CACHE_HIT = SearchAttributeKey.for_bool("ChatCacheHit")

# name -> type, as `temporal operator search-attribute create` and start-dev take them
REGISTRATION: dict[str, str] = {
    CONVERSATION.name: "Keyword",
    USER.name: "Keyword",
    STAGE.name: "Keyword",
    CACHE_HIT.name: "Bool",
}
