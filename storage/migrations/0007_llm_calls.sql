-- Every generation the provider ran for a chat, and what it billed.
--
-- A chat's final answer comes from one generation, but the provider may have run
-- more: a restart-mode retry after a worker died, a fresh generation after a
-- `response.failed`. Each is one row, written by generate_full_text when the
-- provider accepts the request (a re-attach to the same background response is the
-- same row). A row left 'running' by a worker that died is closed by the next
-- attempt, its tokens estimated from the text viewers had received.
CREATE TABLE IF NOT EXISTS llm_calls (
    workflow_id       text        NOT NULL REFERENCES generations (workflow_id) ON DELETE CASCADE,
    call_key          text        NOT NULL,  -- the provider's response id, or 'attempt-N'
    attempt           integer     NOT NULL,  -- Temporal attempt of generate_full_text
    mode              text        NOT NULL,  -- resume or restart
    model             text,
    status            text        NOT NULL DEFAULT 'running'
                      CHECK (status IN ('running', 'completed', 'incomplete', 'failed',
                                        'cancelled', 'interrupted')),
    finish_reason     text,
    prompt_tokens     integer,
    completion_tokens integer,
    usage_estimated   boolean     NOT NULL DEFAULT false,
    cost_usd          numeric(14, 8),        -- NULL: the model has no price
    error             text,
    started_at        timestamptz NOT NULL DEFAULT now(),
    ended_at          timestamptz,
    PRIMARY KEY (workflow_id, call_key)
);

-- How the answer ended (stop, length, content_filter) and what kind of failure ended
-- a failed chat (the error's type, e.g. ProviderOutageError: the user may retry).
ALTER TABLE generations
    ADD COLUMN IF NOT EXISTS finish_reason text,
    ADD COLUMN IF NOT EXISTS error_type    text,
    ADD COLUMN IF NOT EXISTS retry_of      text;

ALTER TABLE answer_cache ADD COLUMN IF NOT EXISTS finish_reason text;
