package migrations_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboxtodo/outboxtodo/migrations"
	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
)

func TestUpIsIdempotent(t *testing.T) {
	t.Parallel()
	url := dbtest.New(t) // applies every migration once
	ctx := context.Background()
	applied, err := migrations.Up(ctx, url)
	if err != nil {
		t.Fatalf("second up: %v", err)
	}
	if len(applied) != 0 {
		t.Fatalf("second up applied %d migrations, want 0", len(applied))
	}
	current, latest, err := migrations.Version(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if current != latest || latest < 1 {
		t.Fatalf("version current=%d latest=%d", current, latest)
	}
}

// On PostgreSQL the CockroachDB-only migration is recorded as applied and changes
// nothing: the indexes it would replace stay, none of its hash-sharded ones exist, and
// the primary keys have no shard column.
func TestCockroachOnlyMigrationIsSkippedOnPostgreSQL(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, url := dbtest.NewPool(t)
	current, _, err := migrations.Version(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if current < 8 {
		t.Fatalf("schema version %d: migration 8 not recorded", current)
	}
	var indexes []string
	rows, err := pool.Query(ctx, `SELECT indexname || ' ' || indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	indexes, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(indexes, "\n")
	for _, want := range []string{
		"outbox_drain_idx CREATE INDEX outbox_drain_idx ON public.outbox USING btree (created_at) WHERE (published_at IS NULL)",
		"todos_pkey CREATE UNIQUE INDEX todos_pkey ON public.todos USING btree (id)",
		"outbox_pkey CREATE UNIQUE INDEX outbox_pkey ON public.outbox USING btree (event_id)",
		"idempotency_keys_created_at_idx CREATE INDEX",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("missing %q among the indexes:\n%s", want, all)
		}
	}
	if strings.Contains(all, "hash_idx") || strings.Contains(all, "shard") {
		t.Errorf("CockroachDB-only indexes on PostgreSQL:\n%s", all)
	}
}
