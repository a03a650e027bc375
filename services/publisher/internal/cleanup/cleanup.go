// Package cleanup deletes the records of events published longer ago than the
// retention age (and the published rows older releases left in the outbox), in
// bounded batches so that no statement holds many row locks or runs long, and only in
// the partitions this replica leases so that replicas never contend for the same rows.
package cleanup

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxtodo/outboxtodo/services/publisher/internal/lease"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/metrics"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/outboxdb"
	"github.com/outboxtodo/outboxtodo/shared/process"
)

// Leases is what cleanup needs from the lease manager.
type Leases interface {
	Held() lease.Held
}

// Cleaner deletes old published rows.
type Cleaner struct {
	pool      *pgxpool.Pool
	leases    Leases
	retention time.Duration
	batch     int
	m         *metrics.Metrics
	log       *slog.Logger
}

// New returns a Cleaner keeping published rows for retention, deleting batch rows per
// statement.
func New(pool *pgxpool.Pool, leases Leases, retention time.Duration, batch int, m *metrics.Metrics, log *slog.Logger) *Cleaner {
	return &Cleaner{pool: pool, leases: leases, retention: retention, batch: batch, m: m, log: log}
}

// Run cleans every interval until ctx is cancelled; failures are logged and retried at
// the next interval.
func (c *Cleaner) Run(ctx context.Context, interval time.Duration) error {
	process.Every(ctx, interval, func() {
		n, err := c.Clean(ctx)
		if err != nil && ctx.Err() == nil {
			c.log.Warn("outbox cleanup failed", "error", err, "deleted", n)
		}
	})
	return nil
}

// Clean deletes batch after batch until a batch comes back short, and returns the
// number of rows deleted.
func (c *Cleaner) Clean(ctx context.Context) (int64, error) {
	parts := c.leases.Held().Partitions()
	if len(parts) == 0 {
		return 0, nil
	}
	var total int64
	for _, del := range outboxdb.Cleanups {
		for {
			sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			n, err := del(sctx, c.pool, c.retention, parts, c.batch)
			cancel()
			if err != nil {
				return total, err
			}
			total += n
			c.m.CleanedUp.Add(float64(n))
			if ctx.Err() != nil {
				return total, nil
			}
			if n < int64(c.batch) {
				break
			}
		}
	}
	return total, nil
}
