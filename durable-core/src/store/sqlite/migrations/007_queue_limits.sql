-- durable schema, version 7: task queue limits.
--
-- `queue_limits` holds the limits of a task queue, shared by every worker on this file:
-- at most `max_concurrency` attempts running at once, and a token bucket of
-- `rate_burst` tokens refilled at `rate_starts` per `rate_per_ms` (one token per attempt
-- start), whose `tokens` were last brought up to date at `tokens_at_ms` by the store's
-- clock. A NULL column is no limit of that kind.
CREATE TABLE queue_limits (
    namespace       TEXT    NOT NULL,
    task_queue      TEXT    NOT NULL,
    max_concurrency INTEGER,
    rate_starts     INTEGER,
    rate_per_ms     INTEGER,
    rate_burst      INTEGER,
    tokens          REAL    NOT NULL,
    tokens_at_ms    INTEGER NOT NULL,
    updated_at_ms   INTEGER NOT NULL,
    PRIMARY KEY (namespace, task_queue)
) WITHOUT ROWID;

-- The attempts started on limited queues. A slot counts while its attempt is the
-- current one, has an owner and a live lease; slots that no longer match are deleted by
-- the next start on the queue, so the paths that end attempts need not know about them.
-- Queues without limits get no slots: their attempts cost nothing here.
CREATE TABLE queue_slots (
    namespace  TEXT    NOT NULL,
    task_queue TEXT    NOT NULL,
    run_key    INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    attempt    INTEGER NOT NULL,
    PRIMARY KEY (namespace, task_queue, run_key, seq)
) WITHOUT ROWID;
