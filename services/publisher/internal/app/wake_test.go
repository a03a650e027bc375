package app_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxtodo/outboxtodo/services/publisher/internal/outboxdb"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/pubtest"
	"github.com/outboxtodo/outboxtodo/shared/outbox"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
	"github.com/outboxtodo/outboxtodo/tools/devstack/natsserver"
)

// An idle publisher is woken by the write's notification; a publisher kept busy by a
// stream of writes is not notified at all (no commit pays for pg_notify), and once the
// writes stop it is woken by notifications again. A LISTEN connection of the test
// sees what the writes send.
func TestWritesNotifyOnlyAnIdlePublisher(t *testing.T) {
	t.Parallel()
	ctx := sharedtest.Context(t, 90*time.Second)
	s := newStack(t, natsserver.NewTest(t, nil).ClientURL())
	// POLL_MAX far beyond the test's waits: an idle publisher that got no notification
	// would not publish in time, so the published write below shows the wake-up.
	// POLL_MIN long enough that the writer below leaves rows for every busy drain.
	s.start(t, "a", map[string]string{"WAKE_MODE": "listen", "POLL_MIN": "100ms", "POLL_MAX": "10m", "LEASE_TTL": "1m"})
	s.leasesReach(ctx, t, "every lease", func(l map[string]int) bool { return l["a"] == 64 })

	listener, err := pgx.Connect(ctx, s.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close(context.WithoutCancel(ctx))
	if err := outboxdb.Listen(ctx, listener); err != nil {
		t.Fatal(err)
	}
	marked := func() bool {
		var n int
		if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM outbox_listeners WHERE replica_id = 'a' AND expires_at > now()").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	}
	// notified commits one event with the conditional notification and reports whether
	// the notification went out.
	notified := func() bool {
		t.Helper()
		if err := pubtest.Write(ctx, s.pool, true, pubtest.Event(t, uuid.New(), uuid.New(), 1, "")); err != nil {
			t.Fatal(err)
		}
		return !nextIsMarker(ctx, t, listener, s.pool)
	}

	sharedtest.Eventually(t, time.Minute, func() (bool, string) { return marked(), "the idle publisher is not marked" })
	if !notified() {
		t.Fatal("a write while the publisher was idle sent no notification")
	}
	s.waitPublished(ctx, t, 1)

	// Keep the publisher busy: rows commit (without notifying) faster than it polls.
	wctx, stopWriter := context.WithCancel(ctx)
	var (
		wg       sync.WaitGroup
		stopOnce sync.Once
		busyRows int
	)
	stop := func() { stopOnce.Do(func() { stopWriter(); wg.Wait() }) }
	defer stop()
	wg.Go(func() {
		for wctx.Err() == nil {
			if err := pubtest.Write(wctx, s.pool, false, pubtest.Event(t, uuid.New(), uuid.New(), 1, "")); err != nil {
				if wctx.Err() == nil {
					t.Errorf("write: %v", err)
				}
				return
			}
			busyRows++
		}
	})
	sharedtest.Eventually(t, time.Minute, func() (bool, string) { return !marked(), "the busy publisher is still marked" })
	written := 1
	for {
		// The write reads the marks in the snapshot its notification used. One that met
		// a mark (the publisher went idle in between, on a loaded machine) is not the
		// case under test: write again.
		var sawMark bool
		if err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
			if err := pubtest.WriteIn(ctx, tx, true, pubtest.Event(t, uuid.New(), uuid.New(), 1, "")); err != nil {
				return err
			}
			return tx.QueryRow(ctx, "SELECT count(*) > 0 FROM outbox_listeners WHERE expires_at > now()").Scan(&sawMark)
		}); err != nil {
			t.Fatal(err)
		}
		written++
		quiet := nextIsMarker(ctx, t, listener, s.pool)
		if sawMark {
			continue
		}
		if !quiet {
			t.Fatal("a write while the publisher was busy sent a notification")
		}
		break
	}
	stop()
	written += busyRows

	sharedtest.Eventually(t, time.Minute, func() (bool, string) { return marked(), "the publisher idle again is not marked" })
	s.waitPublished(ctx, t, written)
	if !notified() {
		t.Fatal("a write after the publisher went idle again sent no notification")
	}
	s.waitPublished(ctx, t, written+1)
}

// nextIsMarker sends a marker notification and reports whether it is the next one
// listener receives; if not, it reads up to the marker. PostgreSQL delivers
// notifications in commit order, so the marker comes after those of every transaction
// committed before.
func nextIsMarker(ctx context.Context, t *testing.T, listener *pgx.Conn, pool *pgxpool.Pool) bool {
	t.Helper()
	if _, err := pool.Exec(ctx, "SELECT pg_notify($1, 'marker')", outbox.Channel); err != nil {
		t.Fatal(err)
	}
	first := true
	for {
		n, err := listener.WaitForNotification(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n.Payload == "marker" {
			return first
		}
		first = false
	}
}
