package cleanup_test

import (
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/cleanup"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/lease"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/metrics"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/pubtest"
	"github.com/outboxtodo/outboxtodo/shared/outbox"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

func TestDeletesOnlyOldPublishedRowsInBatches(t *testing.T) {
	t.Parallel()
	ctx := sharedtest.Context(t, 30*time.Second)
	pool, _ := dbtest.NewPool(t)
	aggs := pubtest.NewAggregates(10)
	aggs.WriteVersions(ctx, t, pool, 2, 1, 3, false) // 30 rows
	// Records of 20 events published two hours ago and 5 just now (as the publisher
	// moves them out of the outbox); 5 rows still unpublished.
	if _, err := pool.Exec(ctx, `
WITH moved AS (
    DELETE FROM outbox WHERE event_id IN (SELECT event_id FROM outbox ORDER BY event_id LIMIT 25)
    RETURNING event_id, partition, aggregate_type, aggregate_id, aggregate_version, event_type, created_at)
INSERT INTO outbox_published (event_id, partition, aggregate_type, aggregate_id, aggregate_version, event_type, created_at, published_at)
SELECT event_id, partition, aggregate_type, aggregate_id, aggregate_version, event_type, created_at,
       CASE WHEN row_number() OVER (ORDER BY event_id) <= 20 THEN now() - interval '2 hours' ELSE now() END
FROM moved`); err != nil {
		t.Fatal(err)
	}
	// And rows an older release marked published in the outbox: 3 old, 1 recent.
	legacy := pubtest.NewAggregates(4)
	legacy.WriteVersions(ctx, t, pool, 1, 1, 1, false)
	if _, err := pool.Exec(ctx, `
UPDATE outbox SET published_at = CASE WHEN event_id = $2 THEN now() ELSE now() - interval '2 hours' END
WHERE event_id = ANY($1)`, legacy.EventIDs(), legacy.EventIDs()[3]); err != nil {
		t.Fatal(err)
	}

	log := sharedtest.Logger(t, slog.LevelInfo)
	leases := lease.New(pool, "a", outbox.Partitions, time.Minute, log)
	if err := leases.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	c := cleanup.New(pool, leases, time.Hour, 7, metrics.New(prometheus.NewRegistry()), log)
	n, err := c.Clean(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != 23 {
		t.Fatalf("deleted %d rows, want the 20 old records and the 3 old rows published by an older release", n)
	}
	var old, recent, unpublished, oldLegacy, recentLegacy int
	if err := pool.QueryRow(ctx, `SELECT
  (SELECT count(*) FROM outbox_published WHERE published_at < now() - interval '1 hour'),
  (SELECT count(*) FROM outbox_published WHERE published_at >= now() - interval '1 hour'),
  (SELECT count(*) FROM outbox WHERE published_at IS NULL),
  (SELECT count(*) FROM outbox WHERE published_at < now() - interval '1 hour'),
  (SELECT count(*) FROM outbox WHERE published_at >= now() - interval '1 hour')`).
		Scan(&old, &recent, &unpublished, &oldLegacy, &recentLegacy); err != nil {
		t.Fatal(err)
	}
	if old != 0 || recent != 5 || unpublished != 5 || oldLegacy != 0 || recentLegacy != 1 {
		t.Fatalf("left %d old and %d recent records, %d unpublished rows, %d old and %d recent rows published by an older release; want 0, 5, 5, 0, 1",
			old, recent, unpublished, oldLegacy, recentLegacy)
	}
}

func TestVacuumsAndAnalyzesOutboxOnceChangesPileUp(t *testing.T) {
	t.Parallel()
	ctx := sharedtest.Context(t, 60*time.Second)
	pool, _ := dbtest.NewPool(t)
	type counts struct{ dead, changed, vacuums, analyzes int64 }
	read := func(table string) counts {
		var c counts
		if err := pool.QueryRow(ctx, `
SELECT n_dead_tup, n_mod_since_analyze, vacuum_count, analyze_count FROM pg_stat_user_tables
WHERE relname = $1 AND schemaname = current_schema()`, table).Scan(&c.dead, &c.changed, &c.vacuums, &c.analyzes); err != nil {
			t.Fatal(err)
		}
		return c
	}
	// The cumulative statistics reach pg_stat_user_tables once the backend that wrote
	// reports them; each call outside a transaction reads a fresh snapshot.
	await := func(table, want string, ok func(counts) bool) {
		t.Helper()
		sharedtest.Eventually(t, 30*time.Second, func() (bool, string) {
			c := read(table)
			return ok(c), fmt.Sprintf("%s %+v, want %s", table, c, want)
		})
	}
	m := metrics.New(prometheus.NewRegistry())
	log := sharedtest.Logger(t, slog.LevelInfo)

	aggs := pubtest.NewAggregates(50)
	aggs.WriteVersions(ctx, t, pool, 1, 1, 1, false) // 50 rows: a backlog never analyzed
	await("outbox", "50 rows changed", func(c counts) bool { return c.changed >= 50 })
	done, err := cleanup.NewVacuumer(pool, 51, m, log).Vacuum(ctx)
	if err != nil || len(done) != 0 {
		t.Fatalf("below the threshold: ran %v, %v", done, err)
	}
	if done, err = cleanup.NewVacuumer(pool, 50, m, log).Vacuum(ctx); err != nil {
		t.Fatal(err)
	}
	if len(done) != 1 || done[0] != "analyze outbox" {
		t.Fatalf("ran %v, want [analyze outbox]", done)
	}
	if c := read("outbox"); c.analyzes < 1 || c.vacuums != 0 {
		t.Fatalf("outbox after the analyze: %+v", c)
	}

	// Publishing moves the rows out: 50 dead tuples in the outbox.
	if _, err := pool.Exec(ctx, `
WITH moved AS (DELETE FROM outbox RETURNING event_id, partition, aggregate_type, aggregate_id, aggregate_version, event_type, created_at)
INSERT INTO outbox_published (event_id, partition, aggregate_type, aggregate_id, aggregate_version, event_type, created_at, published_at)
SELECT event_id, partition, aggregate_type, aggregate_id, aggregate_version, event_type, created_at, now() FROM moved`); err != nil {
		t.Fatal(err)
	}
	await("outbox", "50 dead tuples", func(c counts) bool { return c.dead >= 50 })
	await("outbox_published", "50 rows changed", func(c counts) bool { return c.changed >= 50 })
	if done, err = cleanup.NewVacuumer(pool, 50, m, log).Vacuum(ctx); err != nil {
		t.Fatal(err)
	}
	slices.Sort(done)
	if !slices.Equal(done, []string{"analyze outbox_published", "vacuum outbox"}) {
		t.Fatalf("ran %v, want [analyze outbox_published vacuum outbox]", done)
	}
	if c := read("outbox"); c.vacuums < 1 || c.dead != 0 || c.changed != 0 {
		t.Fatalf("outbox after VACUUM (ANALYZE): %+v", c)
	}
}
