package outboxdb

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/outboxtodo/outboxtodo/shared/postgres"
)

// Churned are the tables the publisher deletes from on every mark or cleanup, whose
// dead rows pile up.
var Churned = []string{"outbox", "outbox_published"}

// ServerVersion returns the server's version(): CockroachDB's names itself.
func ServerVersion(ctx context.Context, db postgres.DBTX) (string, error) {
	var version string
	if err := db.QueryRow(ctx, `SELECT version()`).Scan(&version); err != nil {
		return "", fmt.Errorf("read server version: %w", err)
	}
	return version, nil
}

// activitySQL reads the cumulative statistics' counts of dead tuples and of rows
// changed since the last ANALYZE: PostgreSQL keeps them whether or not autovacuum runs
// (track_counts, on by default).
const activitySQL = `
SELECT relname, n_dead_tup, n_mod_since_analyze FROM pg_stat_user_tables
WHERE schemaname = current_schema() AND relname = ANY($1)`

// Activity is one table's dead tuples and rows changed since its last ANALYZE.
type Activity struct {
	Table         string
	Dead, Changed int64
}

// ReadActivity reads the Activity of tables.
func ReadActivity(ctx context.Context, db postgres.DBTX, tables []string) ([]Activity, error) {
	rows, err := db.Query(ctx, activitySQL, tables)
	if err != nil {
		return nil, fmt.Errorf("read table statistics: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Activity, error) {
		var a Activity
		return a, r.Scan(&a.Table, &a.Dead, &a.Changed)
	})
	if err != nil {
		return nil, fmt.Errorf("read table statistics: %w", err)
	}
	return out, nil
}

// Vacuum runs VACUUM (ANALYZE) on table, skipping it when another session's vacuum
// holds it (SKIP_LOCKED).
func Vacuum(ctx context.Context, db postgres.DBTX, table string) error {
	_, err := db.Exec(ctx, `VACUUM (ANALYZE, SKIP_LOCKED) `+pgx.Identifier{table}.Sanitize())
	return err
}

// Analyze runs ANALYZE on table, skipping it when it is locked, as Vacuum does.
func Analyze(ctx context.Context, db postgres.DBTX, table string) error {
	_, err := db.Exec(ctx, `ANALYZE (SKIP_LOCKED) `+pgx.Identifier{table}.Sanitize())
	return err
}
