-- durable schema for PostgreSQL, version 3: run execution timeouts, as in the SQLite
-- store.
--
-- A run started with an execution timeout has a `deadline_ms` (its start plus the
-- timeout, by the database server's clock); the store's sweep ends a run still running
-- or suspended past it as failed. A reset gives the new run a fresh deadline from the
-- same `execution_timeout_ms`. The index holds only runs a sweep may still end.
ALTER TABLE runs ADD COLUMN execution_timeout_ms BIGINT;
ALTER TABLE runs ADD COLUMN deadline_ms BIGINT;
CREATE INDEX runs_deadline ON runs (namespace, deadline_ms)
    WHERE deadline_ms IS NOT NULL AND status IN ('running', 'suspended');
