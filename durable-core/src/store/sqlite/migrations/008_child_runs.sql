-- durable schema, version 8: child runs.
--
-- A run started by another run's `ChildStarted` event records its parent (`parent_key`,
-- the command number `parent_seq`) and what the parent's cancellation or end does to it
-- (`cancel_policy`: 'request_cancel' or 'abandon'); all three are NULL for runs started
-- from outside. `cancel_requested` is set once the run was asked to cancel, so a request
-- passed on from a parent reaches each child once.
ALTER TABLE runs ADD COLUMN parent_key INTEGER;
ALTER TABLE runs ADD COLUMN parent_seq INTEGER;
ALTER TABLE runs ADD COLUMN cancel_policy TEXT;
ALTER TABLE runs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
CREATE INDEX runs_by_parent ON runs (parent_key, parent_seq) WHERE parent_key IS NOT NULL;
