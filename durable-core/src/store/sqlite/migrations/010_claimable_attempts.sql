-- durable schema, version 10: attempts in flight out of the claim scan.
--
-- One index of every attempt by its available time made each claim poll walk all the
-- attempts running at that moment (each checked for an expired lease and skipped), so
-- a worker with a thousand local attempts in flight read a thousand rows per poll. An
-- attempt is in exactly one of these two instead: waiting ones by the time they become
-- available, leased ones by the time their lease runs out. A claim reads the due part
-- of each; a step still writes one index entry for its attempt, as before.
DROP INDEX IF EXISTS activity_tasks_due;
CREATE INDEX activity_tasks_waiting ON activity_tasks (namespace, available_at_ms)
    WHERE owner IS NULL;
CREATE INDEX activity_tasks_leased ON activity_tasks (namespace, lease_expires_at_ms)
    WHERE owner IS NOT NULL;
