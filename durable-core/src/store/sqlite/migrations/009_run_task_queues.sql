-- durable schema, version 9: a workflow task queue per run.
--
-- A run is claimed only by workers serving its task queue ('' is the default queue, as
-- for activity tasks). Runs written before this version are on the default queue.
ALTER TABLE runs ADD COLUMN task_queue TEXT NOT NULL DEFAULT '';
