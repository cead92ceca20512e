"""Our own metrics, emitted through the Temporal SDK's metric meter.

The worker's Temporal runtime exports them on the same Prometheus endpoint as the
SDK's own metrics (`WORKER_METRICS_PORT`). Workflow-side metrics are not emitted while
a workflow replays, so a replay never counts a chat twice.
"""

from __future__ import annotations

CHATS_STARTED = "durable_chat_chats_started"
CHATS_FINISHED = "durable_chat_chats_finished"  # attribute: outcome
CHUNKS_SAVED = "durable_chat_chunks_saved"
LLM_TOKENS = "durable_chat_llm_tokens"  # attribute: kind = prompt | completion
LLM_RETRIES = "durable_chat_llm_retries"  # attribute: mode = resume | restart
REPLAYS = "durable_chat_replays"  # a worker picked up a chat by replaying its history
CACHE_HITS = "durable_chat_cache_hits"
