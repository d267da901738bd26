-- durable schema for PostgreSQL, version 1: the tables of the SQLite store, with the
-- same meaning. Every table's key starts with (namespace, run_key) -- or (namespace,
-- workflow_id) for the one lookup by workflow id -- so all rows of one run sit under one
-- key prefix, and the tables can be split by workflow over several primaries or the
-- ranges of a distributed SQL engine. Times are integer milliseconds since the epoch by
-- the database server's clock; nothing here needs more than portable SQL.

-- Run keys only have to be unique; the sequence is the one shared counter.
CREATE SEQUENCE run_keys;

CREATE TABLE runs (
    namespace           TEXT    NOT NULL,
    run_key             BIGINT  NOT NULL,
    workflow_id         TEXT    NOT NULL,
    -- 1 for the first run of a workflow id, one more for each reset: (namespace,
    -- workflow_id, run_number) is unique, which makes a second start of the same id a
    -- no-op even when two clients race.
    run_number          BIGINT  NOT NULL,
    run_id              TEXT    NOT NULL,
    workflow            TEXT    NOT NULL,
    status              TEXT    NOT NULL,
    created_at_ms       BIGINT  NOT NULL,
    updated_at_ms       BIGINT  NOT NULL,
    last_event_id       BIGINT  NOT NULL,
    ready               BOOLEAN NOT NULL,
    owner               TEXT,
    fence               BIGINT  NOT NULL DEFAULT 0,
    lease_expires_at_ms BIGINT  NOT NULL DEFAULT 0,
    reason              TEXT,
    activation_failures BIGINT  NOT NULL DEFAULT 0,
    -- The last inbox id handed out for this run (inbox ids count per run, under the
    -- run's row lock, so no table-wide counter is needed).
    inbox_seq           BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (namespace, run_key)
);
CREATE UNIQUE INDEX runs_by_workflow_id ON runs (namespace, workflow_id, run_number);
CREATE INDEX runs_ready ON runs (namespace, run_key) WHERE ready;
CREATE INDEX runs_by_owner ON runs (namespace, owner) WHERE owner IS NOT NULL;
CREATE INDEX runs_by_status ON runs (namespace, status, run_key);

CREATE TABLE events (
    namespace TEXT   NOT NULL,
    run_key   BIGINT NOT NULL,
    event_id  BIGINT NOT NULL,
    time_ms   BIGINT NOT NULL,
    kind      TEXT   NOT NULL,
    seq       BIGINT,
    body      BYTEA  NOT NULL,
    PRIMARY KEY (namespace, run_key, event_id)
);

CREATE TABLE activity_tasks (
    namespace           TEXT   NOT NULL,
    run_key             BIGINT NOT NULL,
    seq                 BIGINT NOT NULL,
    name                TEXT   NOT NULL,
    task_queue          TEXT   NOT NULL,
    event_id            BIGINT NOT NULL,
    attempt             BIGINT NOT NULL,
    owner               TEXT,
    lease_expires_at_ms BIGINT NOT NULL,
    available_at_ms     BIGINT NOT NULL,
    scheduled_at_ms     BIGINT NOT NULL,
    last_error          TEXT,
    PRIMARY KEY (namespace, run_key, seq)
);
CREATE INDEX activity_tasks_due ON activity_tasks (namespace, available_at_ms);
CREATE INDEX activity_tasks_by_owner ON activity_tasks (namespace, owner) WHERE owner IS NOT NULL;

CREATE TABLE timers (
    namespace  TEXT   NOT NULL,
    run_key    BIGINT NOT NULL,
    seq        BIGINT NOT NULL,
    fire_at_ms BIGINT NOT NULL,
    PRIMARY KEY (namespace, run_key, seq)
);
CREATE INDEX timers_due ON timers (namespace, fire_at_ms);

-- Events from outside the run's owner (signals, fired timers, results of activities run
-- elsewhere, cancel requests) wait here until the owner applies them and moves them into
-- the history in the order it applied them: only the owner ever appends to `events`.
CREATE TABLE inbox (
    namespace TEXT   NOT NULL,
    run_key   BIGINT NOT NULL,
    inbox_id  BIGINT NOT NULL,
    time_ms   BIGINT NOT NULL,
    kind      TEXT   NOT NULL,
    body      BYTEA  NOT NULL,
    PRIMARY KEY (namespace, run_key, inbox_id)
);
