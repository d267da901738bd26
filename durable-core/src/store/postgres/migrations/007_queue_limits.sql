-- durable schema, version 7: task queue limits.
--
-- `queue_limits` holds the limits of a task queue, shared by every worker on this
-- database: at most `max_concurrency` attempts running at once, and a token bucket of
-- `rate_burst` tokens refilled at `rate_starts` per `rate_per_ms` (one token per attempt
-- start), whose `tokens` were last brought up to date at `tokens_at_ms` by the server's
-- clock. A NULL column is no limit of that kind. Every start on a limited queue happens
-- under this row's lock (`FOR UPDATE`), so workers judge the limits one at a time.
CREATE TABLE queue_limits (
    namespace       TEXT             NOT NULL,
    task_queue      TEXT             NOT NULL,
    max_concurrency BIGINT,
    rate_starts     BIGINT,
    rate_per_ms     BIGINT,
    rate_burst      BIGINT,
    tokens          DOUBLE PRECISION NOT NULL,
    tokens_at_ms    BIGINT           NOT NULL,
    updated_at_ms   BIGINT           NOT NULL,
    PRIMARY KEY (namespace, task_queue)
);

-- The attempts started on limited queues. A slot counts while its attempt is the
-- current one, has an owner and a live lease; slots that no longer match are deleted by
-- the next start on the queue, so the paths that end attempts need not know about them.
-- Queues without limits get no slots: their attempts cost nothing here.
CREATE TABLE queue_slots (
    namespace  TEXT   NOT NULL,
    task_queue TEXT   NOT NULL,
    run_key    BIGINT NOT NULL,
    seq        BIGINT NOT NULL,
    attempt    BIGINT NOT NULL,
    PRIMARY KEY (namespace, task_queue, run_key, seq)
);
