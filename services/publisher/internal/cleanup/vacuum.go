package cleanup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxtodo/outboxtodo/services/publisher/internal/metrics"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/outboxdb"
	"github.com/outboxtodo/outboxtodo/shared/postgres"
	"github.com/outboxtodo/outboxtodo/shared/process"
)

// Vacuumer vacuums and analyzes the outbox tables when their dead rows or their
// changes since the last ANALYZE pile up.
//
// Every published row leaves a dead tuple in the outbox (the mark moves it to
// outbox_published), and the claim's index scan walks the dead entries from the
// oldest on: until a vacuum removes them, each claim reads more heap pages the longer
// the publisher has run. And the claim's plan needs the backlog's statistics: without
// them PostgreSQL estimates a few hundred unpublished rows, reads and sorts the whole
// backlog instead of scanning it in order up to the batch (150 ms a claim at 66,000
// rows against 3 ms, measured; claims timed out at 10 s after a publisher outage with
// the machine loaded). Autovacuum does both where it runs; this is for the servers
// where it does not keep up with a queue table or is off (the development and CI
// servers of this project run with autovacuum=off). Where autovacuum runs, it resets
// the counts this reads, and the Vacuumer then only steps in when autovacuum falls
// behind by the threshold.
//
// VACUUM (SKIP_LOCKED) lets replicas check independently: one that finds another's
// vacuum running skips its turn. CockroachDB has no VACUUM and collects its MVCC
// garbage itself; there the Vacuumer does nothing.
type Vacuumer struct {
	pool     *pgxpool.Pool
	deadRows int64
	m        *metrics.Metrics
	log      *slog.Logger
}

// NewVacuumer returns a Vacuumer that vacuums a table once it holds deadRows dead
// tuples, and analyzes it once deadRows rows changed since its last ANALYZE.
func NewVacuumer(pool *pgxpool.Pool, deadRows int64, m *metrics.Metrics, log *slog.Logger) *Vacuumer {
	return &Vacuumer{pool: pool, deadRows: deadRows, m: m, log: log}
}

// Run checks every interval until ctx is cancelled. It returns at once, doing nothing,
// on a database without VACUUM.
func (v *Vacuumer) Run(ctx context.Context, interval time.Duration) error {
	ok, err := v.supported(ctx)
	if err != nil {
		return err
	}
	if !ok {
		v.log.Info("outbox vacuum off: the database has no VACUUM (CockroachDB collects its own garbage)")
		return nil
	}
	process.Every(ctx, interval, func() {
		if _, err := v.Vacuum(ctx); err != nil && ctx.Err() == nil {
			v.log.Warn("outbox vacuum failed", "error", err)
		}
	})
	return nil
}

func (v *Vacuumer) supported(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	version, err := outboxdb.ServerVersion(ctx, v.pool)
	if err != nil {
		if ctx.Err() != nil {
			return false, nil
		}
		return false, err
	}
	return !strings.Contains(version, "CockroachDB"), nil
}

// Vacuum runs VACUUM (ANALYZE) on each outbox table (outboxdb.Churned) holding at
// least the threshold of dead tuples, and ANALYZE on each other one with that many rows
// changed since its last ANALYZE. It returns what it ran, as "vacuum <table>" and
// "analyze <table>".
func (v *Vacuumer) Vacuum(ctx context.Context) ([]string, error) {
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	tables, err := outboxdb.ReadActivity(qctx, v.pool, outboxdb.Churned)
	cancel()
	if err != nil {
		return nil, err
	}
	var done []string
	var errs []error
	for _, t := range tables {
		var (
			action string
			run    func(context.Context, postgres.DBTX, string) error
		)
		switch {
		case t.Dead >= v.deadRows:
			action, run = "vacuum", outboxdb.Vacuum
		case t.Changed >= v.deadRows:
			action, run = "analyze", outboxdb.Analyze
		default:
			continue
		}
		// The live backlog and its dead rows: seconds at most, bounded anyway so that a
		// stuck one does not hold the loop.
		vctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		start := time.Now()
		err := run(vctx, v.pool, t.Table)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", action, t.Table, err))
			continue
		}
		v.m.Vacuums.WithLabelValues(t.Table, action).Inc()
		v.log.Debug("outbox maintenance", "action", action, "table", t.Table, "dead_tuples", t.Dead, "changed", t.Changed, "took", time.Since(start))
		done = append(done, action+" "+t.Table)
	}
	return done, errors.Join(errs...)
}
