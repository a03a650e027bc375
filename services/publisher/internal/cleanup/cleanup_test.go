package cleanup_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/cleanup"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/lease"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/metrics"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/pubtest"
	"github.com/outboxtodo/outboxtodo/shared/outbox"
)

func TestDeletesOnlyOldPublishedRowsInBatches(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
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

	log := pubtest.Logger(t)
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

func TestVacuumsOutboxOnceDeadRowsPileUp(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pool, _ := dbtest.NewPool(t)
	aggs := pubtest.NewAggregates(50)
	aggs.WriteVersions(ctx, t, pool, 1, 1, 1, false) // 50 rows
	// Publishing moves the rows out: 50 dead tuples in the outbox.
	if _, err := pool.Exec(ctx, `
WITH moved AS (DELETE FROM outbox RETURNING event_id, partition, aggregate_type, aggregate_id, aggregate_version, event_type, created_at)
INSERT INTO outbox_published (event_id, partition, aggregate_type, aggregate_id, aggregate_version, event_type, created_at, published_at)
SELECT event_id, partition, aggregate_type, aggregate_id, aggregate_version, event_type, created_at, now() FROM moved`); err != nil {
		t.Fatal(err)
	}
	dead := func() int64 {
		var n int64
		if err := pool.QueryRow(ctx, `SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'outbox' AND schemaname = current_schema()`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// The cumulative statistics reach pg_stat_user_tables once the backend that
	// deleted reports them; a fresh snapshot is read on each call outside a transaction.
	for dead() < 50 {
		select {
		case <-ctx.Done():
			t.Fatalf("dead tuples never reached the statistics: %d", dead())
		case <-time.After(100 * time.Millisecond):
		}
	}
	m := metrics.New(prometheus.NewRegistry())
	log := pubtest.Logger(t)

	done, err := cleanup.NewVacuumer(pool, 51, m, log).Vacuum(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(done) != 0 {
		t.Fatalf("vacuumed %v below the threshold", done)
	}
	done, err = cleanup.NewVacuumer(pool, 50, m, log).Vacuum(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(done) != 1 || done[0] != "outbox" {
		t.Fatalf("vacuumed %v, want [outbox] (outbox_published has no dead tuples)", done)
	}
	var vacuums int64
	if err := pool.QueryRow(ctx, `SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'outbox' AND schemaname = current_schema()`).Scan(&vacuums); err != nil {
		t.Fatal(err)
	}
	if vacuums < 1 {
		t.Fatalf("outbox vacuum_count %d after the vacuum", vacuums)
	}
	if n := dead(); n != 0 {
		t.Fatalf("%d dead tuples left after the vacuum", n)
	}
}
