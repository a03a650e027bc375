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
	// 20 published two hours ago, 5 published just now, 5 unpublished.
	if _, err := pool.Exec(ctx, `
UPDATE outbox SET published_at = CASE WHEN rn <= 20 THEN now() - interval '2 hours' ELSE now() END
FROM (SELECT event_id AS id, row_number() OVER (ORDER BY event_id) AS rn FROM outbox) AS r
WHERE outbox.event_id = r.id AND r.rn <= 25`); err != nil {
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
	if n != 20 {
		t.Fatalf("deleted %d rows, want the 20 old published ones", n)
	}
	var old, recent, unpublished int
	if err := pool.QueryRow(ctx, `SELECT
  count(*) FILTER (WHERE published_at < now() - interval '1 hour'),
  count(*) FILTER (WHERE published_at >= now() - interval '1 hour'),
  count(*) FILTER (WHERE published_at IS NULL) FROM outbox`).Scan(&old, &recent, &unpublished); err != nil {
		t.Fatal(err)
	}
	if old != 0 || recent != 5 || unpublished != 5 {
		t.Fatalf("left %d old, %d recent, %d unpublished; want 0, 5, 5", old, recent, unpublished)
	}
}
