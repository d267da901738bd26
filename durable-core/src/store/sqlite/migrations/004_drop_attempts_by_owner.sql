-- durable schema, version 4.
-- Leases of activity attempts are renewed by key (the attempts a worker names), never by
-- owner: the index only cost a page write for every attempt created and finished.
DROP INDEX IF EXISTS activity_tasks_by_owner;
