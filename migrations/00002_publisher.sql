-- The publisher's state: per-row retry bookkeeping in the outbox, partition leases with
-- fencing epochs, and replica heartbeats for rebalancing. Runs unchanged on PostgreSQL
-- 15+ and CockroachDB: plain tables, partial indexes, no triggers, no advisory locks.

-- CockroachDB cannot index a column added earlier in the same transaction, so this
-- migration runs statement by statement, each one safe to run again after a failure.
-- +goose NO TRANSACTION

-- +goose Up
-- When a failed row may be published again (exponential backoff with jitter); NULL means
-- at once. Later versions of the same aggregate wait behind it.
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS next_attempt_at TIMESTAMPTZ;
-- Set when a row failed MAX_ATTEMPTS times: the publisher skips it (and the later
-- versions of its aggregate) until an operator retries it.
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS parked_at TIMESTAMPTZ;

-- Rows that hold their aggregate back (in backoff or parked): tiny in normal operation,
-- so the drain's "is an earlier version blocked?" check stays cheap.
CREATE INDEX IF NOT EXISTS outbox_blocked_idx ON outbox (partition, aggregate_type, aggregate_id, aggregate_version)
    WHERE published_at IS NULL AND (next_attempt_at IS NOT NULL OR parked_at IS NOT NULL);

-- One row per outbox partition. The owner holds the partition while expires_at is in
-- the future (database clock); every acquisition bumps epoch, and marking rows published
-- requires the same owner, the same epoch and an unexpired lease (fencing), so a replica
-- that stalled past its lease cannot mark rows another replica now owns.
CREATE TABLE IF NOT EXISTS publisher_leases (
    partition  INT         PRIMARY KEY CHECK (partition >= 0),
    owner      TEXT        NOT NULL DEFAULT '',
    epoch      BIGINT      NOT NULL DEFAULT 0,
    expires_at TIMESTAMPTZ NOT NULL
);

-- Live publisher replicas, by heartbeat: each takes about ceil(partitions / live) leases.
CREATE TABLE IF NOT EXISTS publisher_replicas (
    replica_id TEXT        PRIMARY KEY,
    expires_at TIMESTAMPTZ NOT NULL
);

-- +goose Down
DROP TABLE IF EXISTS publisher_replicas;
DROP TABLE IF EXISTS publisher_leases;
DROP INDEX IF EXISTS outbox_blocked_idx;
ALTER TABLE outbox DROP COLUMN IF EXISTS parked_at;
ALTER TABLE outbox DROP COLUMN IF EXISTS next_attempt_at;
