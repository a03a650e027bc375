package migrations

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/pressly/goose/v3"
)

// cockroachHashSharded is migration 8, for CockroachDB only; on PostgreSQL it records
// its version and changes nothing. Keys that grow with time (UUIDv7 ids chosen by the
// API, created_at, published_at) send every insert of an index to the range holding its
// end: on CockroachDB that one range, on one node, takes the whole write load.
// Hash-sharded indexes spread such an index over buckets (a hidden column of a hash of
// the key, CockroachDB's default bucket count) at the price of reading every bucket for
// a range scan; the drain's "oldest unpublished first" becomes a merge of the buckets'
// heads. A primary key is replaced by dropping and adding the constraint in one
// statement, which keeps CockroachDB from leaving the old key behind as a secondary
// index. See docs/SCALING.md. Written from CockroachDB's documentation; no CockroachDB
// server can run here, so it has not been applied to one (TestCockroachOnlyMigration
// shows only that PostgreSQL skips it).
var cockroachHashSharded = goose.NewGoMigration(8,
	&goose.GoFunc{RunDB: func(ctx context.Context, db *sql.DB) error { return onCockroach(ctx, db, hashShardedUp) }},
	&goose.GoFunc{RunDB: func(ctx context.Context, db *sql.DB) error { return onCockroach(ctx, db, hashShardedDown) }},
)

// Each statement is its own schema change (CockroachDB runs a primary key change only
// outside a transaction that changes anything else), and can run again after a failure.
var hashShardedUp = []string{
	`ALTER TABLE todos DROP CONSTRAINT todos_pkey, ADD CONSTRAINT todos_pkey PRIMARY KEY (id) USING HASH`,
	`ALTER TABLE outbox DROP CONSTRAINT outbox_pkey, ADD CONSTRAINT outbox_pkey PRIMARY KEY (event_id) USING HASH`,
	`ALTER TABLE outbox_published DROP CONSTRAINT outbox_published_pkey, ADD CONSTRAINT outbox_published_pkey PRIMARY KEY (event_id) USING HASH`,
	`CREATE INDEX IF NOT EXISTS outbox_drain_hash_idx ON outbox (created_at) USING HASH WHERE published_at IS NULL`,
	`DROP INDEX IF EXISTS outbox@outbox_drain_idx`,
	`CREATE INDEX IF NOT EXISTS outbox_published_published_at_hash_idx ON outbox_published (published_at) USING HASH`,
	`DROP INDEX IF EXISTS outbox_published@outbox_published_published_at_idx`,
	`CREATE INDEX IF NOT EXISTS idempotency_keys_created_at_hash_idx ON idempotency_keys (created_at) USING HASH`,
	`DROP INDEX IF EXISTS idempotency_keys@idempotency_keys_created_at_idx`,
}

var hashShardedDown = []string{
	`CREATE INDEX IF NOT EXISTS idempotency_keys_created_at_idx ON idempotency_keys (created_at)`,
	`DROP INDEX IF EXISTS idempotency_keys@idempotency_keys_created_at_hash_idx`,
	`CREATE INDEX IF NOT EXISTS outbox_published_published_at_idx ON outbox_published (published_at)`,
	`DROP INDEX IF EXISTS outbox_published@outbox_published_published_at_hash_idx`,
	`CREATE INDEX IF NOT EXISTS outbox_drain_idx ON outbox (created_at) WHERE published_at IS NULL`,
	`DROP INDEX IF EXISTS outbox@outbox_drain_hash_idx`,
	`ALTER TABLE outbox_published DROP CONSTRAINT outbox_published_pkey, ADD CONSTRAINT outbox_published_pkey PRIMARY KEY (event_id)`,
	`ALTER TABLE outbox DROP CONSTRAINT outbox_pkey, ADD CONSTRAINT outbox_pkey PRIMARY KEY (event_id)`,
	`ALTER TABLE todos DROP CONSTRAINT todos_pkey, ADD CONSTRAINT todos_pkey PRIMARY KEY (id)`,
}

// onCockroach runs stmts one by one when db is CockroachDB, and nothing otherwise.
func onCockroach(ctx context.Context, db *sql.DB, stmts []string) error {
	crdb, err := isCockroach(ctx, db)
	if err != nil || !crdb {
		return err
	}
	for _, s := range stmts {
		if _, err := db.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return nil
}

// isCockroach tells CockroachDB from PostgreSQL by version(), which CockroachDB
// answers with "CockroachDB CCL v…" (or OSS).
func isCockroach(ctx context.Context, db *sql.DB) (bool, error) {
	var v string
	if err := db.QueryRowContext(ctx, "SELECT version()").Scan(&v); err != nil {
		return false, fmt.Errorf("read server version: %w", err)
	}
	return strings.Contains(v, "CockroachDB"), nil
}
