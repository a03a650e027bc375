package bench

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	sharedpg "github.com/outboxtodo/outboxtodo/shared/postgres"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/report"
)

// The profile sees a backend waiting on a row lock and one idle in its transaction,
// leaves its own connection out, and counts a writer's inserts and commits in the
// deltas.
func TestProfilePostgres(t *testing.T) {
	t.Parallel()
	ctx := sharedtest.Context(t, 2*time.Minute)
	dbURL := dbtest.NewEmpty(t)
	pool, err := sharedpg.Connect(ctx, dbURL, sharedpg.PoolConfig{MaxConns: 1, AppName: "profiler"})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	connect := func(app string) *pgx.Conn {
		cfg, err := pgx.ParseConfig(dbURL)
		if err != nil {
			t.Fatal(err)
		}
		cfg.RuntimeParams["application_name"] = app
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// The test's own queries run apart from the profiled pool, whose only connection
	// is the sampler's.
	observer := connect("observer")
	defer observer.Close(context.WithoutCancel(ctx))
	if _, err := observer.Exec(ctx, "CREATE TABLE lk (id int PRIMARY KEY, v int); INSERT INTO lk VALUES (1, 0); CREATE TABLE w (id int PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	holder := connect("holder")
	defer holder.Close(context.WithoutCancel(ctx))
	holdTx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = holdTx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := holdTx.Exec(ctx, "UPDATE lk SET v = 1 WHERE id = 1"); err != nil {
		t.Fatal(err)
	}
	blocked := connect("blocked")
	defer blocked.Close(context.WithoutCancel(ctx))
	blockedDone := make(chan error, 1)
	go func() {
		_, err := blocked.Exec(ctx, "UPDATE lk SET v = 2 WHERE id = 1")
		blockedDone <- err
	}()
	defer func() { _ = holdTx.Rollback(context.WithoutCancel(ctx)); <-blockedDone }()
	waitActivity(ctx, t, observer, "the blocked update waits on the holder",
		"SELECT count(*) FROM pg_stat_activity WHERE application_name = 'blocked' AND wait_event_type = 'Lock'")

	load, stop := context.WithCancel(ctx)
	defer stop()
	type result struct {
		pp  *report.PgProfile
		err error
	}
	done := make(chan result, 1)
	go func() {
		pp, err := profilePostgres(load, ctx, pool, 10*time.Millisecond)
		done <- result{pp, err}
	}()
	// The sampler has sampled once it has run its sampling query to its end.
	waitActivity(ctx, t, observer, "a sample taken",
		"SELECT count(*) FROM pg_stat_activity WHERE application_name = 'profiler' AND state = 'idle' AND query LIKE '%backend_type = ''client backend''%'")
	const inserts = 50
	writer := connect("writer")
	for i := range inserts {
		if _, err := writer.Exec(ctx, "INSERT INTO w VALUES ($1)", i); err != nil {
			t.Fatal(err)
		}
	}
	// A backend flushes its statistics when it exits.
	if err := writer.Close(ctx); err != nil {
		t.Fatal(err)
	}
	waitActivity(ctx, t, observer, "the writer gone", "SELECT 1 - count(*) FROM pg_stat_activity WHERE application_name = 'writer'")
	stop()
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	pp := res.pp
	if pp.Samples < 1 || pp.Statements == "" {
		t.Errorf("samples %d, statements note %q", pp.Samples, pp.Statements)
	}
	seen := map[[3]string]bool{}
	for _, w := range pp.Waits {
		seen[[3]string{w.App, w.State, w.Event}] = true
		if w.App == "profiler" {
			t.Errorf("the sampler's own connection is in the waits: %+v", w)
		}
	}
	for _, want := range [][3]string{
		{"blocked", "active", "Lock:transactionid"},
		{"holder", "idle in transaction", "Client:ClientRead"},
	} {
		if !seen[want] {
			t.Errorf("no wait %v in %+v", want, pp.Waits)
		}
	}
	var w *report.TableDelta
	for i := range pp.Tables {
		if pp.Tables[i].Table == "w" {
			w = &pp.Tables[i]
		}
	}
	if w == nil || w.Inserted != inserts || w.LiveTup != inserts {
		t.Errorf("table w: %+v, want %d inserted and live", w, inserts)
	}
	if pp.Database.Commits < inserts || pp.Database.Inserted < inserts || pp.WAL.Records < inserts {
		t.Errorf("database %+v, WAL %+v: want at least %d commits, inserts and WAL records", pp.Database, pp.WAL, inserts)
	}
}

// waitActivity polls query, until it answers a positive count, within ctx's deadline.
func waitActivity(ctx context.Context, t *testing.T, conn *pgx.Conn, what, query string) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		var n int
		if err := conn.QueryRow(ctx, query).Scan(&n); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if n > 0 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not within the test's bound", what)
		case <-tick.C:
		}
	}
}
