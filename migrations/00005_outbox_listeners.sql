-- Publisher replicas that are idle and LISTENing on the outbox channel. A write notifies
-- only while a row here is unexpired (the API's notifySQL, in
-- services/api/internal/postgres/outbox.go): a busy publisher polls
-- at POLL_MIN anyway, and pg_notify at commit takes one global lock that halved
-- PostgreSQL's commit throughput at 32 clients. One row per replica, so that each
-- replica's flag is its own; a replica that dies idle leaves a row that expires.
-- Plain table, runs unchanged on CockroachDB (where no one notifies or listens).

-- +goose Up
CREATE TABLE IF NOT EXISTS outbox_listeners (
    replica_id TEXT        PRIMARY KEY,
    expires_at TIMESTAMPTZ NOT NULL
);

-- +goose Down
DROP TABLE IF EXISTS outbox_listeners;
