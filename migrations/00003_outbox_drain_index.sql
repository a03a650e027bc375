-- The publisher claims the unpublished rows of the partitions it leases oldest first,
-- up to a batch. On (partition, created_at) PostgreSQL cannot read several partitions
-- in created_at order, so every claim read and sorted the replica's whole backlog
-- (6-8 ms per batch of 500 at a backlog of 20,000 rows, growing with the backlog). On
-- created_at alone a claim reads the rows in order and stops at its batch size: about
-- 2 ms at the same backlog for a replica holding every partition. A replica holding a
-- few partitions reads past the others' rows (the partition is a filter here): against
-- the old index, measured even at 2 of 64 partitions, a third slower at 8 of 64, and
-- faster from 21 of 64 (three replicas) up. The outbox stats'
-- min(created_at) uses it too. The old index is dropped so that the API's inserts keep
-- maintaining one index for the drain, not two.
-- Runs unchanged on PostgreSQL 15+ and CockroachDB (which accepts CONCURRENTLY and
-- builds every index online).

-- CONCURRENTLY keeps the API writing while the index builds on a large outbox; it
-- cannot run inside a transaction. A build that failed half-way leaves an invalid
-- index behind in PostgreSQL: drop it before running this migration again.
-- +goose NO TRANSACTION

-- +goose Up
CREATE INDEX CONCURRENTLY IF NOT EXISTS outbox_drain_idx ON outbox (created_at) WHERE published_at IS NULL;
DROP INDEX CONCURRENTLY IF EXISTS outbox_unpublished_idx;

-- +goose Down
CREATE INDEX CONCURRENTLY IF NOT EXISTS outbox_unpublished_idx ON outbox (partition, created_at) WHERE published_at IS NULL;
DROP INDEX CONCURRENTLY IF EXISTS outbox_drain_idx;
