package cleanup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxtodo/outboxtodo/services/publisher/internal/metrics"
)

// Vacuumer vacuums the outbox tables when their dead rows pile up.
//
// Every published row leaves a dead tuple in the outbox (the mark moves it to
// outbox_published), and the claim's index scan walks the dead entries from the
// oldest on: until a vacuum removes them, each claim reads more heap pages the longer
// the publisher has run. Autovacuum does this where it runs; this is for the servers
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

// vacuumedTables are the tables the publisher deletes from on every mark or cleanup.
var vacuumedTables = []string{"outbox", "outbox_published"}

// NewVacuumer returns a Vacuumer that vacuums a table once it holds deadRows dead
// tuples.
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
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if _, err := v.Vacuum(ctx); err != nil && ctx.Err() == nil {
			v.log.Warn("outbox vacuum failed", "error", err)
		}
	}
}

func (v *Vacuumer) supported(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var version string
	if err := v.pool.QueryRow(ctx, `SELECT version()`).Scan(&version); err != nil {
		if ctx.Err() != nil {
			return false, nil
		}
		return false, fmt.Errorf("read server version: %w", err)
	}
	return !strings.Contains(version, "CockroachDB"), nil
}

// deadSQL reads the cumulative statistics' dead-tuple counts: PostgreSQL keeps them
// whether or not autovacuum runs (track_counts, on by default).
const deadSQL = `
SELECT relname, n_dead_tup FROM pg_stat_user_tables
WHERE schemaname = current_schema() AND relname = ANY($1)`

// Vacuum vacuums each outbox table holding at least the threshold of dead tuples and
// returns the tables it vacuumed.
func (v *Vacuumer) Vacuum(ctx context.Context) ([]string, error) {
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	rows, err := v.pool.Query(qctx, deadSQL, vacuumedTables)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("read dead tuples: %w", err)
	}
	type table struct {
		name string
		dead int64
	}
	tables, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (table, error) {
		var t table
		return t, r.Scan(&t.name, &t.dead)
	})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("read dead tuples: %w", err)
	}
	var done []string
	var errs []error
	for _, t := range tables {
		if t.dead < v.deadRows {
			continue
		}
		// A vacuum of the live backlog and its dead rows: seconds at most, bounded
		// anyway so that a stuck one does not hold the loop.
		vctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		start := time.Now()
		_, err := v.pool.Exec(vctx, `VACUUM (SKIP_LOCKED) `+pgx.Identifier{t.name}.Sanitize())
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("vacuum %s: %w", t.name, err))
			continue
		}
		v.m.Vacuums.WithLabelValues(t.name).Inc()
		v.log.Debug("vacuumed", "table", t.name, "dead_tuples", t.dead, "took", time.Since(start))
		done = append(done, t.name)
	}
	return done, errors.Join(errs...)
}
