-- How the chat's LLM call behaves on a retry: 'resume' (re-attach to the same
-- background generation) or 'restart' (a new generation).
ALTER TABLE generations ADD COLUMN IF NOT EXISTS generation_mode text;
