-- Run-aware records: a Temporal Reset starts a new run of the same workflow id, and
-- an operator may terminate a run or let it time out. Every row now says which run
-- wrote it, and a chat's row says which run is current and whose answer readers get.
--
-- generations.run_id        the run whose records are current ('' for rows written
--                           before this migration: adopted by the first run that writes)
-- generations.answer_run_id the run whose generated answer the chunks belong to (a run
--                           reset mid-checkpoint keeps its predecessor's answer, a run
--                           reset before generation makes its own); NULL: none yet
-- chunks.run_id             the answer run the chunk belongs to (part of the key)
-- chunks.writer_run_id      the run whose save_chunk wrote it
-- chat_events.run_id        the run that appended the event
-- llm_calls.run_id          the run whose generate_full_text made the call
ALTER TABLE generations
    ADD COLUMN IF NOT EXISTS run_id        text NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS answer_run_id text;
UPDATE generations SET answer_run_id = '' WHERE answer_run_id IS NULL;

ALTER TABLE chunks
    ADD COLUMN IF NOT EXISTS run_id        text NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS writer_run_id text NOT NULL DEFAULT '';
ALTER TABLE chunks DROP CONSTRAINT IF EXISTS chunks_pkey;
ALTER TABLE chunks ADD PRIMARY KEY (workflow_id, run_id, idx);

ALTER TABLE chat_events ADD COLUMN IF NOT EXISTS run_id text NOT NULL DEFAULT '';
ALTER TABLE llm_calls ADD COLUMN IF NOT EXISTS run_id text NOT NULL DEFAULT '';

-- Two more ways to end, written by the reconciler (the workflow cannot write them: a
-- terminated or timed-out run runs no more code).
DROP INDEX IF EXISTS generations_user_status_idx;
ALTER TABLE generations DROP COLUMN status;
ALTER TABLE generations ADD COLUMN status text GENERATED ALWAYS AS (
    CASE WHEN stage IN ('completed', 'failed', 'cancelled', 'terminated', 'timed_out')
         THEN stage ELSE 'running' END
) STORED;
-- The reconciler's scan: rows that still say running.
CREATE INDEX IF NOT EXISTS generations_running_idx
    ON generations (updated_at) WHERE status = 'running';
