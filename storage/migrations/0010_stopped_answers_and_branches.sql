-- A stopped answer is kept, and a conversation can branch (issue 18).
--
-- generations.stage 'stopped'  stopped while it was being written; its chunks hold the
--                              text shown up to the stop (a final stage)
-- generations.parent_id        the chat whose answer this turn follows in its branch
--                              (NULL: the first turn of its conversation)
-- generations.variant_of       regenerate or edit: the chat this is another version of
-- generations.continues        continue: the chat whose cut or stopped answer this carries on
-- conversation_heads           the last turn of the branch a user is on, per conversation
--                              (none: the conversation's latest chat)
ALTER TABLE generations
    ADD COLUMN IF NOT EXISTS parent_id  text,
    ADD COLUMN IF NOT EXISTS variant_of text,
    ADD COLUMN IF NOT EXISTS continues  text;

CREATE TABLE IF NOT EXISTS conversation_heads (
    conversation_id text        NOT NULL,
    user_id         text        NOT NULL,
    head_id         text        NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, user_id)
);

-- Conversations so far were one line of turns in creation order: say so.
UPDATE generations g SET parent_id = earlier.previous
FROM (
    SELECT workflow_id,
           lag(workflow_id) OVER (PARTITION BY conversation_id, user_id ORDER BY created_at)
               AS previous
    FROM generations WHERE conversation_id IS NOT NULL
) earlier
WHERE g.workflow_id = earlier.workflow_id AND earlier.previous IS NOT NULL
  AND g.parent_id IS NULL AND g.variant_of IS NULL AND g.continues IS NULL
  AND NOT EXISTS (SELECT 1 FROM conversation_heads h
                  WHERE h.conversation_id = g.conversation_id);

DROP INDEX IF EXISTS generations_running_idx;
ALTER TABLE generations DROP COLUMN status;
ALTER TABLE generations ADD COLUMN status text GENERATED ALWAYS AS (
    CASE WHEN stage IN ('completed', 'failed', 'cancelled', 'stopped', 'terminated',
                        'timed_out')
         THEN stage ELSE 'running' END
) STORED;
CREATE INDEX IF NOT EXISTS generations_running_idx
    ON generations (updated_at) WHERE status = 'running';
