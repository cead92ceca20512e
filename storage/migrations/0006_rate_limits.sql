-- Per-user fixed-window counters of chat starts (shared by every gateway process),
-- and an index for counting a user's running chats.
CREATE TABLE IF NOT EXISTS rate_windows (
    user_id      text        NOT NULL,
    window_start timestamptz NOT NULL,
    count        integer     NOT NULL,
    PRIMARY KEY (user_id, window_start)
);

CREATE INDEX IF NOT EXISTS generations_user_status_idx ON generations (user_id, status);
