-- Answer cache (one row per cache key) and cost accounting on generations.
--
-- A row is first a claim ('pending', owned by the chat that will call the LLM), then
-- the answer ('ready', until expires_at). A second identical chat that finds a pending
-- claim waits for it instead of calling the LLM again; a claim whose owner failed or
-- was cancelled is deleted, and one older than its lease may be taken over.
CREATE TABLE IF NOT EXISTS answer_cache (
    cache_key         text PRIMARY KEY,
    state             text        NOT NULL CHECK (state IN ('pending', 'ready')),
    owner_workflow_id text        NOT NULL,
    text              text,
    model             text,
    prompt_tokens     integer,
    completion_tokens integer,
    generation_ms     integer,
    cost_usd          numeric(14, 8),
    claimed_at        timestamptz NOT NULL DEFAULT now(),
    ready_at          timestamptz,
    expires_at        timestamptz
);

ALTER TABLE generations
    ADD COLUMN IF NOT EXISTS cache_key   text,
    ADD COLUMN IF NOT EXISTS cache_hit   boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS cached_from text,
    ADD COLUMN IF NOT EXISTS cost_usd    numeric(14, 8),
    ADD COLUMN IF NOT EXISTS saved_usd   numeric(14, 8),
    ADD COLUMN IF NOT EXISTS saved_ms    integer;
