-- durable schema, version 6: schedules.
--
-- A schedule starts a run of `workflow` at each tick of its spec: a cron expression
-- (`spec_kind` 'cron', evaluated in UTC) or an interval (`spec_kind` 'interval',
-- `every_ms` with `offset_ms`). `next_fire_at_ms` is its next tick by the store's clock
-- (NULL when the spec has no future tick); a worker's sweep starts the tick's run and
-- moves it on in one transaction. `input` is sealed by the store's codec, like event
-- bodies.
CREATE TABLE schedules (
    namespace            TEXT    NOT NULL,
    schedule_id          TEXT    NOT NULL,
    workflow             TEXT    NOT NULL,
    input                BLOB    NOT NULL,
    spec_kind            TEXT    NOT NULL,
    cron                 TEXT,
    every_ms             INTEGER,
    offset_ms            INTEGER,
    catch_up             TEXT    NOT NULL,
    catch_up_max         INTEGER,
    overlap              TEXT    NOT NULL,
    execution_timeout_ms INTEGER,
    paused               INTEGER NOT NULL DEFAULT 0,
    next_fire_at_ms      INTEGER,
    created_at_ms        INTEGER NOT NULL,
    updated_at_ms        INTEGER NOT NULL,
    runs_started         INTEGER NOT NULL DEFAULT 0,
    ticks_skipped        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (namespace, schedule_id)
) WITHOUT ROWID;
CREATE INDEX schedules_due ON schedules (namespace, next_fire_at_ms)
    WHERE paused = 0 AND next_fire_at_ms IS NOT NULL;

-- One row per tick a schedule handled: the run it started (or would have, when the
-- overlap policy skipped it). The key makes a tick's record, like its run, unique.
CREATE TABLE schedule_fires (
    namespace    TEXT    NOT NULL,
    schedule_id  TEXT    NOT NULL,
    tick_ms      INTEGER NOT NULL,
    fired_at_ms  INTEGER NOT NULL,
    outcome      TEXT    NOT NULL,
    workflow_id  TEXT    NOT NULL,
    PRIMARY KEY (namespace, schedule_id, tick_ms)
) WITHOUT ROWID;
