package bench

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/report"
)

// waitEvery is how often pgProfile samples pg_stat_activity: often enough for a top
// list of a 12 s phase, rare enough that the sampling is not a load of its own.
const waitEvery = 75 * time.Millisecond

// pgProfile profiles PostgreSQL for the run's database while phase runs, until load
// ends, and stores it in the results; a failure is a note, not the phase's failure.
// After load ends it still reads the counters, within ctx.
func (r *runner) pgProfile(load, ctx context.Context, phase string) {
	pp, err := profilePostgres(load, ctx, r.pool, waitEvery)
	if err != nil {
		r.note("PostgreSQL profile of %s: %v", phase, err)
		return
	}
	pp.Phase = phase
	r.mu.Lock()
	r.res.PgProfile = pp
	r.mu.Unlock()
}

// profilePostgres samples the backends of pool's database every interval until load
// ends, and takes the deltas of the statistics counters over that time. The sampling
// connection leaves itself out. PostgreSQL flushes a backend's counters at most once a
// second, so the deltas may miss the last second's work and include the one before.
func profilePostgres(load, ctx context.Context, pool *pgxpool.Pool, interval time.Duration) (*report.PgProfile, error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("acquire a connection: %w", err)
	}
	defer conn.Release()
	pp := &report.PgProfile{IntervalMS: float64(interval.Microseconds()) / 1000}
	if pp.Statements, err = statementsNote(ctx, conn.Conn()); err != nil {
		return nil, err
	}
	before, err := readCounters(ctx, conn.Conn())
	if err != nil {
		return nil, err
	}
	start := time.Now()
	var samples []report.WaitSample
	t := time.NewTicker(interval)
	defer t.Stop()
	for load.Err() == nil {
		// Under ctx, not load: pgx closes a connection whose query's context ends, and
		// the end of the load must not close the one the final counters are read on.
		s, err := sampleActivity(ctx, conn.Conn())
		if err != nil {
			return nil, err
		}
		samples = append(samples, s...)
		pp.Samples++
		select {
		case <-load.Done():
		case <-t.C:
		}
	}
	pp.Seconds = time.Since(start).Seconds()
	after, err := readCounters(ctx, conn.Conn())
	if err != nil {
		return nil, err
	}
	pp.Waits = report.TopWaits(samples, pp.Samples)
	pp.Database, pp.WAL, pp.Tables = after.minus(before)
	return pp, nil
}

// statementsNote says why there are no per-statement figures. pg_stat_statements
// answers only when the server preloads it, and the bench never restarts the shared
// server to load it; when it is preloaded the run's database has the extension, but
// its figures are the server's cumulative ones, so they are left to the operator.
func statementsNote(ctx context.Context, conn *pgx.Conn) (string, error) {
	var libs string
	if err := conn.QueryRow(ctx, "SHOW shared_preload_libraries").Scan(&libs); err != nil {
		return "", fmt.Errorf("shared_preload_libraries: %w", err)
	}
	if !slices.Contains(strings.Split(strings.ReplaceAll(libs, " ", ""), ","), "pg_stat_statements") {
		return fmt.Sprintf("none: pg_stat_statements is not in shared_preload_libraries (%q), and loading it needs a server restart, which the bench does not do to a shared server", libs), nil
	}
	return "pg_stat_statements is preloaded on this server; read it there (the bench reports the counters below)", nil
}

func sampleActivity(ctx context.Context, conn *pgx.Conn) ([]report.WaitSample, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rows, err := conn.Query(ctx, `SELECT application_name, coalesce(state, ''), coalesce(wait_event_type, ''), coalesce(wait_event, '')
FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()`)
	if err != nil {
		return nil, fmt.Errorf("sample pg_stat_activity: %w", err)
	}
	s, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (report.WaitSample, error) {
		var w report.WaitSample
		err := row.Scan(&w.App, &w.State, &w.EventType, &w.Event)
		return w, err
	})
	if err != nil {
		return nil, fmt.Errorf("sample pg_stat_activity: %w", err)
	}
	return s, nil
}

// counters are the cumulative statistics one snapshot read.
type counters struct {
	db     report.DBDelta
	wal    report.WALDelta
	tables map[string]report.TableDelta
}

func readCounters(ctx context.Context, conn *pgx.Conn) (counters, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var c counters
	// The statistics snapshot of a transaction is cached; outside one each read is fresh.
	if _, err := conn.Exec(ctx, "SELECT pg_stat_clear_snapshot()"); err != nil {
		return c, fmt.Errorf("clear the statistics snapshot: %w", err)
	}
	d := &c.db
	if err := conn.QueryRow(ctx, `SELECT xact_commit, xact_rollback, blks_read, blks_hit, tup_inserted, tup_updated, tup_deleted, tup_fetched
FROM pg_stat_database WHERE datname = current_database()`).Scan(&d.Commits, &d.Rollbacks, &d.BlksRead, &d.BlksHit, &d.Inserted, &d.Updated, &d.Deleted, &d.Fetched); err != nil {
		return c, fmt.Errorf("read pg_stat_database: %w", err)
	}
	w := &c.wal
	if err := conn.QueryRow(ctx, `SELECT wal_records, wal_fpi, wal_bytes::bigint, wal_buffers_full, wal_write, wal_sync FROM pg_stat_wal`).
		Scan(&w.Records, &w.FPI, &w.Bytes, &w.BufferFull, &w.Writes, &w.Syncs); err != nil {
		return c, fmt.Errorf("read pg_stat_wal: %w", err)
	}
	rows, err := conn.Query(ctx, `SELECT t.relname, t.n_tup_ins, t.n_tup_upd, t.n_tup_hot_upd, t.n_tup_del, coalesce(t.seq_scan, 0), coalesce(t.idx_scan, 0),
       coalesce(io.heap_blks_read, 0), coalesce(io.heap_blks_hit, 0), coalesce(io.idx_blks_read, 0), coalesce(io.idx_blks_hit, 0),
       t.n_live_tup, t.n_dead_tup, t.autovacuum_count
FROM pg_stat_user_tables t JOIN pg_statio_user_tables io USING (relid)`)
	if err != nil {
		return c, fmt.Errorf("read pg_stat_user_tables: %w", err)
	}
	tables, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (report.TableDelta, error) {
		var t report.TableDelta
		err := row.Scan(&t.Table, &t.Inserted, &t.Updated, &t.HOTUpdated, &t.Deleted, &t.SeqScans, &t.IdxScans,
			&t.HeapRead, &t.HeapHit, &t.IdxRead, &t.IdxHit, &t.LiveTup, &t.DeadTup, &t.Autovacuums)
		return t, err
	})
	if err != nil {
		return c, fmt.Errorf("read pg_stat_user_tables: %w", err)
	}
	c.tables = map[string]report.TableDelta{}
	for _, t := range tables {
		c.tables[t.Table] = t
	}
	return c, nil
}

// minus is the change from b to c, tables by name, the busiest (rows written, then
// blocks touched) first.
func (c counters) minus(b counters) (report.DBDelta, report.WALDelta, []report.TableDelta) {
	db := report.DBDelta{
		Commits: c.db.Commits - b.db.Commits, Rollbacks: c.db.Rollbacks - b.db.Rollbacks,
		BlksRead: c.db.BlksRead - b.db.BlksRead, BlksHit: c.db.BlksHit - b.db.BlksHit,
		Inserted: c.db.Inserted - b.db.Inserted, Updated: c.db.Updated - b.db.Updated,
		Deleted: c.db.Deleted - b.db.Deleted, Fetched: c.db.Fetched - b.db.Fetched,
	}
	wal := report.WALDelta{
		Records: c.wal.Records - b.wal.Records, FPI: c.wal.FPI - b.wal.FPI, Bytes: c.wal.Bytes - b.wal.Bytes,
		BufferFull: c.wal.BufferFull - b.wal.BufferFull, Writes: c.wal.Writes - b.wal.Writes, Syncs: c.wal.Syncs - b.wal.Syncs,
	}
	var tables []report.TableDelta
	for name, a := range c.tables {
		p := b.tables[name] // a table created during the phase starts at zero
		tables = append(tables, report.TableDelta{
			Table: name, Inserted: a.Inserted - p.Inserted, Updated: a.Updated - p.Updated, HOTUpdated: a.HOTUpdated - p.HOTUpdated,
			Deleted: a.Deleted - p.Deleted, SeqScans: a.SeqScans - p.SeqScans, IdxScans: a.IdxScans - p.IdxScans,
			HeapRead: a.HeapRead - p.HeapRead, HeapHit: a.HeapHit - p.HeapHit, IdxRead: a.IdxRead - p.IdxRead, IdxHit: a.IdxHit - p.IdxHit,
			LiveTup: a.LiveTup, DeadTup: a.DeadTup, Autovacuums: a.Autovacuums - p.Autovacuums,
		})
	}
	slices.SortFunc(tables, func(x, y report.TableDelta) int {
		wx, wy := x.Inserted+x.Updated+x.Deleted, y.Inserted+y.Updated+y.Deleted
		bx, by := x.HeapHit+x.HeapRead+x.IdxHit+x.IdxRead, y.HeapHit+y.HeapRead+y.IdxHit+y.IdxRead
		return cmp.Or(cmp.Compare(wy, wx), cmp.Compare(by, bx), strings.Compare(x.Table, y.Table))
	})
	return db, wal, tables
}
