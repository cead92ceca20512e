-- The per-chat event log behind the resumable SSE stream (GET /api/workflows/{id}/events).
--
-- Every event has a per-chat sequence number allocated by incrementing
-- generations.last_event_seq in the same transaction as the insert. The row lock on
-- the generation serialises the writers of one chat, so sequence numbers become
-- visible in order: a reader that has seen seq N never later finds an N' < N.
ALTER TABLE generations ADD COLUMN IF NOT EXISTS last_event_seq bigint NOT NULL DEFAULT 0;

CREATE TABLE IF NOT EXISTS chat_events (
    workflow_id text        NOT NULL REFERENCES generations (workflow_id) ON DELETE CASCADE,
    seq         bigint      NOT NULL,
    type        text        NOT NULL,
    data        jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow_id, seq)
);
