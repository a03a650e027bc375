package outbox_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/outbox"
	"github.com/outboxtodo/outboxtodo/shared/postgres"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

// proxiedPool is a pool on a fresh database whose connections go through a PGProxy,
// and a direct pool on the same database.
func proxiedPool(t *testing.T) (*pgxpool.Pool, *pgxpool.Pool, *sharedtest.PGProxy) {
	t.Helper()
	direct, dbURL := dbtest.NewPool(t)
	proxiedURL, proxy := sharedtest.ProxyDatabase(t, dbURL)
	proxied, err := pgxpool.New(context.Background(), proxiedURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxied.Close)
	return proxied, direct, proxy
}

func todoEvent(t *testing.T, owner uuid.UUID, version int64) event.Envelope {
	t.Helper()
	id := uuid.New()
	now := time.Now().UTC().Truncate(time.Microsecond)
	e, err := event.New(event.TodoCreated, id, owner, version, now, event.TraceContext{},
		event.TodoData{ID: id, UserID: owner, Title: "t", Priority: "low", Version: version, CreatedAt: now, UpdatedAt: now})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func rows(t *testing.T, pool *pgxpool.Pool, e event.Envelope) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM outbox WHERE event_id = $1`, e.ID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestCommittedResolvesALostCommit breaks the connection at COMMIT, before and after
// the server ran it: the commit error says the outcome is unknown, and Committed
// then tells the truth.
func TestCommittedResolvesALostCommit(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		fault sharedtest.CommitFault
		want  bool
	}{
		{"commit never reached the server", sharedtest.CommitLost, false},
		{"commit landed, answer lost", sharedtest.AnswerLost, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			proxied, direct, proxy := proxiedPool(t)
			ctx := context.Background()
			e := todoEvent(t, uuid.New(), 1)
			proxy.FailNextCommit(tc.fault)
			err := postgres.WithTx(ctx, proxied, func(tx pgx.Tx) error { return outbox.Insert(ctx, tx, e) })
			if !errors.Is(err, postgres.ErrCommitUnknown) {
				t.Fatalf("err = %v, want ErrCommitUnknown", err)
			}
			got, err := outbox.Committed(ctx, proxied, e)
			if err != nil {
				t.Fatalf("committed: %v", err)
			}
			if got != tc.want {
				t.Fatalf("Committed = %v, want %v", got, tc.want)
			}
			if n := rows(t, direct, e); (n == 1) != tc.want {
				t.Fatalf("%d rows in the outbox, want committed=%v", n, tc.want)
			}
		})
	}
}

// TestCommittedWaitsForATransactionInProgress: while the writer's transaction still
// holds its row, the probe waits for its end instead of answering "not committed".
func TestCommittedWaitsForATransactionInProgress(t *testing.T) {
	t.Parallel()
	for _, commit := range []bool{true, false} {
		pool, _ := dbtest.NewPool(t)
		ctx := context.Background()
		e := todoEvent(t, uuid.New(), 1)
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := outbox.Insert(ctx, tx, e); err != nil {
			t.Fatal(err)
		}
		type answer struct {
			committed bool
			err       error
		}
		probed := make(chan answer, 1)
		go func() {
			c, err := outbox.Committed(ctx, pool, e)
			probed <- answer{c, err}
		}()
		// The probe must be waiting on the writer's row lock before the writer ends.
		waitForLockWait(t, pool)
		if commit {
			err = tx.Commit(ctx)
		} else {
			err = tx.Rollback(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
		a := <-probed
		if a.err != nil || a.committed != commit {
			t.Fatalf("writer committed=%v: probe answered %v, %v", commit, a.committed, a.err)
		}
	}
}

// TestCommittedSeesAnotherWriterOfTheSameVersion: when another event took the
// aggregate's version, the lost one cannot have committed.
func TestCommittedSeesAnotherWriterOfTheSameVersion(t *testing.T) {
	t.Parallel()
	pool, _ := dbtest.NewPool(t)
	ctx := context.Background()
	winner := todoEvent(t, uuid.New(), 1)
	loser := winner
	loser.ID = uuid.New()
	if err := postgres.WithTx(ctx, pool, func(tx pgx.Tx) error { return outbox.Insert(ctx, tx, winner) }); err != nil {
		t.Fatal(err)
	}
	if c, err := outbox.Committed(ctx, pool, loser); err != nil || c {
		t.Fatalf("Committed(loser) = %v, %v; want false", c, err)
	}
	if c, err := outbox.Committed(ctx, pool, winner); err != nil || !c {
		t.Fatalf("Committed(winner) = %v, %v; want true", c, err)
	}
	if n := rows(t, pool, loser); n != 0 {
		t.Fatalf("the probe left %d rows behind", n)
	}
}

// TestCommittedFindsAPublishedEvent: the publisher may have moved the row out of the
// outbox (published) before the probe runs, or while it waits on the move.
func TestCommittedFindsAPublishedEvent(t *testing.T) {
	t.Parallel()
	const publish = `
WITH moved AS (
    DELETE FROM outbox WHERE event_id = $1
    RETURNING event_id, partition, aggregate_type, aggregate_id, aggregate_version, event_type, created_at)
INSERT INTO outbox_published (event_id, partition, aggregate_type, aggregate_id, aggregate_version, event_type, created_at, published_at)
SELECT event_id, partition, aggregate_type, aggregate_id, aggregate_version, event_type, created_at, now() FROM moved`
	pool, _ := dbtest.NewPool(t)
	ctx := context.Background()
	published := todoEvent(t, uuid.New(), 1)
	if err := postgres.WithTx(ctx, pool, func(tx pgx.Tx) error { return outbox.Insert(ctx, tx, published) }); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, publish, published.ID); err != nil {
		t.Fatal(err)
	}
	if c, err := outbox.Committed(ctx, pool, published); err != nil || !c {
		t.Fatalf("Committed(published) = %v, %v; want true", c, err)
	}
	// Another event of the same version, lost, while the winner is published.
	loser := published
	loser.ID = uuid.New()
	if c, err := outbox.Committed(ctx, pool, loser); err != nil || c {
		t.Fatalf("Committed(loser) = %v, %v; want false", c, err)
	}

	// The move runs while the probe waits on it.
	moving := todoEvent(t, uuid.New(), 1)
	if err := postgres.WithTx(ctx, pool, func(tx pgx.Tx) error { return outbox.Insert(ctx, tx, moving) }); err != nil {
		t.Fatal(err)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, publish, moving.ID); err != nil {
		t.Fatal(err)
	}
	probed := make(chan error, 1)
	go func() {
		c, err := outbox.Committed(ctx, pool, moving)
		if err == nil && !c {
			err = errors.New("not committed")
		}
		probed <- err
	}()
	waitForLockWait(t, pool)
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-probed; err != nil {
		t.Fatalf("Committed(moved while probing): %v; want true", err)
	}
}

func waitForLockWait(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var n int
		err := pool.QueryRow(context.Background(),
			`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the probe never waited on the writer's lock")
}
