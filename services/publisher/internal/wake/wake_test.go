package wake_test

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/wake"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

// The flag marks its replica unless it is busy (and then asks for one more drain, since
// a row committed before the mark sent no notification), keeps the mark while drains
// find a row now and then, and removes it once drains keep finding rows.
func TestFlagFollowsTheDrains(t *testing.T) {
	t.Parallel()
	ctx := sharedtest.Context(t, time.Minute)
	pool, _ := dbtest.NewPool(t)
	marked := func() bool { return liveMark(ctx, t, pool) }
	f := wake.NewFlag(pool, "r", time.Minute, func() bool { return true }, sharedtest.Logger(t, slog.LevelInfo))

	steps := []struct {
		claimed int
		again   bool
		marked  bool
	}{
		{claimed: 2, again: true, marked: true},   // at start, not busy yet: mark, drain once more
		{claimed: 0, again: false, marked: true},  // idle: sleep
		{claimed: 1, again: false, marked: true},  // a notification's row: keep the mark
		{claimed: 0, again: false, marked: true},  // idle again, already marked
		{claimed: 5, again: false, marked: true},  // work...
		{claimed: 7, again: false, marked: false}, // ...and more: busy, writers stop notifying
		{claimed: 3, again: false, marked: false},
		{claimed: 0, again: true, marked: true}, // drained: mark, drain once more
	}
	for i, s := range steps {
		if again := f.Drained(ctx, s.claimed); again != s.again {
			t.Fatalf("step %d (claimed %d): again = %v, want %v", i, s.claimed, again, s.again)
		}
		if m := marked(); m != s.marked {
			t.Fatalf("step %d (claimed %d): marked = %v, want %v", i, s.claimed, m, s.marked)
		}
	}
	f.Clear(ctx)
	if marked() {
		t.Fatal("marked after Clear")
	}
}

// An idle replica refreshes its mark, so that it does not expire while the replica
// sleeps between polls.
func TestFlagRefreshesItsMark(t *testing.T) {
	t.Parallel()
	ctx := sharedtest.Context(t, time.Minute)
	pool, _ := dbtest.NewPool(t)
	expires := func() time.Time {
		t.Helper()
		var at time.Time
		if err := pool.QueryRow(ctx, "SELECT expires_at FROM outbox_listeners WHERE replica_id = 'r'").Scan(&at); err != nil {
			t.Fatal(err)
		}
		return at
	}
	// A zero lifetime makes every idle drain due for a refresh.
	f := wake.NewFlag(pool, "r", 0, func() bool { return true }, sharedtest.Logger(t, slog.LevelInfo))
	if !f.Drained(ctx, 0) {
		t.Fatal("first idle drain did not ask for another")
	}
	first := expires()
	if f.Drained(ctx, 0) {
		t.Fatal("second idle drain asked for another")
	}
	if second := expires(); !second.After(first) {
		t.Fatalf("mark not refreshed: expires %v, then %v", first, second)
	}
}

// A replica that holds no partitions is never marked, and drops its mark when it loses
// them: writes would wake it for nothing.
func TestFlagMarksOnlyAReplicaHoldingPartitions(t *testing.T) {
	t.Parallel()
	ctx := sharedtest.Context(t, time.Minute)
	pool, _ := dbtest.NewPool(t)
	marked := func() bool { return liveMark(ctx, t, pool) }
	var holding atomic.Bool
	f := wake.NewFlag(pool, "r", time.Minute, holding.Load, sharedtest.Logger(t, slog.LevelInfo))
	if f.Drained(ctx, 0) || marked() {
		t.Fatal("a replica without partitions was marked")
	}
	holding.Store(true)
	if !f.Drained(ctx, 0) || !marked() {
		t.Fatal("a replica that gained partitions was not marked")
	}
	holding.Store(false)
	if f.Drained(ctx, 0) || marked() {
		t.Fatal("a replica that lost its partitions kept its mark")
	}
}

// liveMark reports whether replica r is marked idle and listening, its mark not
// expired.
func liveMark(ctx context.Context, t *testing.T, pool *pgxpool.Pool) bool {
	t.Helper()
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM outbox_listeners WHERE replica_id = 'r' AND expires_at > now()").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n == 1
}
