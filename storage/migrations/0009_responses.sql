-- The OpenAI-compatible API (/v1): one row per response (or chat completion), beside
-- the chat that generates it (generations.workflow_id). The row holds what the chat's
-- own records do not: the parameters a response object echoes, the conversation it
-- was asked in (so a later `previous_response_id` continues it), the idempotency
-- fingerprint of the create request, and when it expires.
--
-- response_id   resp_<hex of the chat's uuid>; the chat is chat-<uuid>
-- api           'responses' or 'chat.completions' (which endpoint created it)
-- params        echoed fields: model, instructions, metadata, max_output_tokens, ...
-- messages      the turns sent to the model besides the system prompt: earlier turns
--               and this prompt, oldest first
-- request_hash  sha256 of the create body: the same Idempotency-Key with another body
--               is refused (409)
-- stored        store=true: retrievable until expires_at; false: deleted once finished
CREATE TABLE IF NOT EXISTS responses (
    response_id  text PRIMARY KEY,
    workflow_id  text        NOT NULL UNIQUE,
    user_id      text        NOT NULL,
    api          text        NOT NULL CHECK (api IN ('responses', 'chat.completions')),
    params       jsonb       NOT NULL,
    messages     jsonb       NOT NULL,
    request_hash text        NOT NULL,
    background   boolean     NOT NULL,
    stored       boolean     NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
-- The retention sweep: the oldest expired rows first.
CREATE INDEX IF NOT EXISTS responses_expires_idx ON responses (expires_at);
