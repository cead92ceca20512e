-- One row per chat turn (one ChatStreamingWorkflow run), written by the workers.
CREATE TABLE IF NOT EXISTS generations (
    workflow_id       text PRIMARY KEY,
    conversation_id   text,
    user_id           text NOT NULL DEFAULT 'anonymous',
    prompt            text NOT NULL DEFAULT '',
    model             text,
    provider          text,
    stage             text NOT NULL,
    status            text GENERATED ALWAYS AS (
                          CASE WHEN stage IN ('completed', 'failed', 'cancelled') THEN stage
                               ELSE 'running' END
                      ) STORED,
    total_chunks      integer,
    prompt_tokens     integer,
    completion_tokens integer,
    error             text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    completed_at      timestamptz
);

CREATE INDEX IF NOT EXISTS generations_conversation_idx
    ON generations (conversation_id, created_at);

-- One row per checkpointed chunk: checkpoint 3.i of the design. The primary key
-- makes save_chunk idempotent: a retried or replayed activity cannot add a row.
CREATE TABLE IF NOT EXISTS chunks (
    workflow_id text    NOT NULL REFERENCES generations (workflow_id) ON DELETE CASCADE,
    idx         integer NOT NULL CHECK (idx >= 0),
    text        text    NOT NULL,
    worker      text    NOT NULL,
    attempt     integer NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow_id, idx)
);
