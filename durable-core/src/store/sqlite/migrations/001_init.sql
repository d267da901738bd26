-- durable schema, version 1.
CREATE TABLE runs (
    run_key             INTEGER PRIMARY KEY,
    namespace           TEXT    NOT NULL,
    workflow_id         TEXT    NOT NULL,
    run_id              TEXT    NOT NULL UNIQUE,
    workflow            TEXT    NOT NULL,
    status              TEXT    NOT NULL,
    created_at_ms       INTEGER NOT NULL,
    updated_at_ms       INTEGER NOT NULL,
    last_event_id       INTEGER NOT NULL,
    ready               INTEGER NOT NULL,
    owner               TEXT,
    fence               INTEGER NOT NULL DEFAULT 0,
    lease_expires_at_ms INTEGER NOT NULL DEFAULT 0,
    reason              TEXT,
    activation_failures INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX runs_by_workflow_id ON runs (namespace, workflow_id, run_key);
CREATE INDEX runs_ready ON runs (namespace, run_key) WHERE ready = 1;
CREATE INDEX runs_by_owner ON runs (owner) WHERE owner IS NOT NULL;
CREATE INDEX runs_by_status ON runs (namespace, status, run_key);

CREATE TABLE events (
    run_key  INTEGER NOT NULL,
    event_id INTEGER NOT NULL,
    time_ms  INTEGER NOT NULL,
    kind     TEXT    NOT NULL,
    seq      INTEGER,
    body     BLOB    NOT NULL,
    PRIMARY KEY (run_key, event_id)
) WITHOUT ROWID;

CREATE TABLE activity_tasks (
    run_key             INTEGER NOT NULL,
    seq                 INTEGER NOT NULL,
    namespace           TEXT    NOT NULL,
    name                TEXT    NOT NULL,
    task_queue          TEXT    NOT NULL,
    event_id            INTEGER NOT NULL,
    attempt             INTEGER NOT NULL,
    owner               TEXT,
    lease_expires_at_ms INTEGER NOT NULL,
    available_at_ms     INTEGER NOT NULL,
    scheduled_at_ms     INTEGER NOT NULL,
    last_error          TEXT,
    PRIMARY KEY (run_key, seq)
) WITHOUT ROWID;
CREATE INDEX activity_tasks_due ON activity_tasks (namespace, available_at_ms);
CREATE INDEX activity_tasks_by_owner ON activity_tasks (owner) WHERE owner IS NOT NULL;

CREATE TABLE timers (
    run_key    INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    namespace  TEXT    NOT NULL,
    fire_at_ms INTEGER NOT NULL,
    PRIMARY KEY (run_key, seq)
) WITHOUT ROWID;
CREATE INDEX timers_due ON timers (namespace, fire_at_ms);

-- Events from outside the run's owner (signals, fired timers, results of activities run
-- elsewhere, cancel requests) wait here until the owner applies them and moves them into
-- the history in the order it applied them: only the owner ever appends to `events`.
CREATE TABLE inbox (
    inbox_id INTEGER PRIMARY KEY,
    run_key  INTEGER NOT NULL,
    time_ms  INTEGER NOT NULL,
    kind     TEXT    NOT NULL,
    body     BLOB    NOT NULL
);
CREATE INDEX inbox_by_run ON inbox (run_key, inbox_id);
