-- durable schema for PostgreSQL, version 8: child runs.
--
-- A run started by another run's `ChildStarted` event records its parent (`parent_key`,
-- the command number `parent_seq`; the parent is in the same namespace) and what the
-- parent's cancellation or end does to it (`cancel_policy`: 'request_cancel' or
-- 'abandon'); all three are NULL for runs started from outside. `cancel_requested` is
-- set once the run was asked to cancel, so a request passed on from a parent reaches
-- each child once.
ALTER TABLE runs ADD COLUMN parent_key BIGINT;
ALTER TABLE runs ADD COLUMN parent_seq BIGINT;
ALTER TABLE runs ADD COLUMN cancel_policy TEXT;
ALTER TABLE runs ADD COLUMN cancel_requested BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX runs_by_parent ON runs (namespace, parent_key, parent_seq)
    WHERE parent_key IS NOT NULL;
