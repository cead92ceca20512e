-- Tables of Chainlit's built-in asyncpg data layer (chainlit.data.chainlit_data_layer),
-- which persists the UI's users, conversations (threads), messages (steps), elements
-- and feedback in the same PostgreSQL as the rest of durable-chat.
--
-- Names and columns are the ones that data layer's queries use (quoted camelCase, as in
-- Chainlit's reference Prisma schema). Differences from that schema, on purpose:
--   * Step.type is TEXT instead of an enum, so a step type added by a later Chainlit
--     release cannot make inserts fail;
--   * Step.parentId has no foreign key: Chainlit may write a child before its parent.
--
-- Idempotent (IF NOT EXISTS everywhere); no BEGIN/COMMIT: the migration runner wraps
-- each file in one transaction.

CREATE TABLE IF NOT EXISTS "User" (
    "id"         TEXT         PRIMARY KEY,
    "identifier" TEXT         NOT NULL,
    "metadata"   JSONB        NOT NULL DEFAULT '{}'::jsonb,
    "createdAt"  TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt"  TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE UNIQUE INDEX IF NOT EXISTS "User_identifier_key" ON "User" ("identifier");

CREATE TABLE IF NOT EXISTS "Thread" (
    "id"        TEXT         PRIMARY KEY,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "deletedAt" TIMESTAMP(3),
    "name"      TEXT,
    "metadata"  JSONB        NOT NULL DEFAULT '{}'::jsonb,
    "tags"      TEXT[]       NOT NULL DEFAULT ARRAY[]::TEXT[],
    "userId"    TEXT         REFERENCES "User" ("id") ON DELETE CASCADE
);

CREATE INDEX IF NOT EXISTS "Thread_userId_updatedAt_idx" ON "Thread" ("userId", "updatedAt");
CREATE INDEX IF NOT EXISTS "Thread_name_idx" ON "Thread" ("name");

CREATE TABLE IF NOT EXISTS "Step" (
    "id"        TEXT         PRIMARY KEY,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "parentId"  TEXT,
    "threadId"  TEXT         REFERENCES "Thread" ("id") ON DELETE CASCADE,
    "input"     TEXT,
    "metadata"  JSONB        NOT NULL DEFAULT '{}'::jsonb,
    "name"      TEXT,
    "output"    TEXT,
    "type"      TEXT         NOT NULL,
    "showInput" TEXT         DEFAULT 'json',
    "isError"   BOOLEAN      DEFAULT FALSE,
    "startTime" TIMESTAMP(3) NOT NULL,
    "endTime"   TIMESTAMP(3) NOT NULL
);

CREATE INDEX IF NOT EXISTS "Step_threadId_startTime_idx" ON "Step" ("threadId", "startTime");
CREATE INDEX IF NOT EXISTS "Step_parentId_idx" ON "Step" ("parentId");

CREATE TABLE IF NOT EXISTS "Element" (
    "id"          TEXT         PRIMARY KEY,
    "createdAt"   TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt"   TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "threadId"    TEXT         REFERENCES "Thread" ("id") ON DELETE CASCADE,
    "stepId"      TEXT         NOT NULL REFERENCES "Step" ("id") ON DELETE CASCADE,
    "metadata"    JSONB        NOT NULL DEFAULT '{}'::jsonb,
    "mime"        TEXT,
    "name"        TEXT         NOT NULL,
    "objectKey"   TEXT,
    "url"         TEXT,
    "chainlitKey" TEXT,
    "display"     TEXT,
    "size"        TEXT,
    "language"    TEXT,
    "page"        INTEGER,
    "props"       JSONB        DEFAULT '{}'::jsonb
);

CREATE INDEX IF NOT EXISTS "Element_stepId_idx" ON "Element" ("stepId");
CREATE INDEX IF NOT EXISTS "Element_threadId_idx" ON "Element" ("threadId");

CREATE TABLE IF NOT EXISTS "Feedback" (
    "id"        TEXT             PRIMARY KEY,
    "createdAt" TIMESTAMP(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "stepId"    TEXT             REFERENCES "Step" ("id") ON DELETE SET NULL,
    "name"      TEXT             NOT NULL,
    "value"     DOUBLE PRECISION NOT NULL,
    "comment"   TEXT
);

CREATE INDEX IF NOT EXISTS "Feedback_stepId_idx" ON "Feedback" ("stepId");
