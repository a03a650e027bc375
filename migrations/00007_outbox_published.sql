-- Marking a row published was an UPDATE of published_at, which sits in the predicates of
-- the outbox's partial indexes, so it could never be a HOT update: every mark wrote a
-- new copy of the whole row (payload included) and new entries in the primary key,
-- outbox_aggregate_version_key and outbox_published_at_idx, in the table the API
-- inserts into. From this release the publisher deletes the row from the outbox instead
-- (a delete writes no index entry) and records the publication here, in a narrow row
-- without the payload: the outbox holds only the backlog, and this table what was
-- published, for RETENTION. Rows an older release marked with published_at stay in the
-- outbox until cleanup deletes them by age.
-- Runs unchanged on PostgreSQL 15+ and CockroachDB.

-- CONCURRENTLY cannot run inside a transaction; CockroachDB cannot index a table
-- created earlier in the same transaction.
-- +goose NO TRANSACTION

-- +goose Up
CREATE TABLE IF NOT EXISTS outbox_published (
    event_id          UUID        PRIMARY KEY,
    partition         INT         NOT NULL CHECK (partition >= 0),
    aggregate_type    TEXT        NOT NULL,
    aggregate_id      UUID        NOT NULL,
    aggregate_version BIGINT      NOT NULL,
    event_type        TEXT        NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL,
    published_at      TIMESTAMPTZ NOT NULL
);
-- Cleanup of published rows by age.
CREATE INDEX CONCURRENTLY IF NOT EXISTS outbox_published_published_at_idx ON outbox_published (published_at);

-- +goose Down
DROP TABLE IF EXISTS outbox_published;
