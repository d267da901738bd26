-- durable schema for PostgreSQL, version 2: activity heartbeats, as in the SQLite store.
--
-- An attempt of a call with a heartbeat timeout must heartbeat before
-- `heartbeat_deadline_ms` (its start, then its last heartbeat, plus the timeout, by the
-- database server's clock), or the store's sweep ends it with a `HeartbeatTimeout`
-- failure and retries it by its policy. The deadline is NULL while no attempt runs. The
-- last heartbeat's details (sealed by the codec, like event bodies) stay for the next
-- attempt.
ALTER TABLE activity_tasks ADD COLUMN heartbeat_timeout_ms BIGINT;
ALTER TABLE activity_tasks ADD COLUMN heartbeat_deadline_ms BIGINT;
ALTER TABLE activity_tasks ADD COLUMN last_heartbeat_at_ms BIGINT;
ALTER TABLE activity_tasks ADD COLUMN heartbeat_details BYTEA;
CREATE INDEX activity_tasks_heartbeat_due ON activity_tasks (namespace, heartbeat_deadline_ms)
    WHERE heartbeat_deadline_ms IS NOT NULL;
