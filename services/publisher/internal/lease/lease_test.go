package lease_test

import (
	"log/slog"
	"testing"
	"time"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/lease"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

// Replicas converge on fair, disjoint shares as they join and leave, and a partition
// taken over gets a new epoch.
func TestSharesRebalanceAndEpochsAdvance(t *testing.T) {
	t.Parallel()
	ctx := sharedtest.Context(t, 30*time.Second)
	pool, _ := dbtest.NewPool(t)
	log := sharedtest.Logger(t, slog.LevelInfo)
	const parts = 64
	mk := func(name string) *lease.Manager { return lease.New(pool, name, parts, time.Minute, log) }
	tickAll := func(ms ...*lease.Manager) {
		for range 3 { // a few rounds: releases in one round are acquired in the next
			for _, m := range ms {
				if err := m.Tick(ctx); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	check := func(want map[*lease.Manager]int, ms ...*lease.Manager) {
		t.Helper()
		owner := map[int32]string{}
		for _, m := range ms {
			h := m.Held()
			if w, ok := want[m]; ok && len(h) != w {
				t.Errorf("%s holds %d, want %d", m.Owner(), len(h), w)
			}
			for p := range h {
				if o, dup := owner[p]; dup {
					t.Errorf("partition %d held by %s and %s", p, o, m.Owner())
				}
				owner[p] = m.Owner()
			}
		}
		if len(owner) != parts {
			t.Errorf("%d partitions held, want %d", len(owner), parts)
		}
	}

	a := mk("a")
	tickAll(a)
	check(map[*lease.Manager]int{a: 64}, a)
	epochBefore := a.Held()[63]

	b, c := mk("b"), mk("c")
	tickAll(a, b, c)
	check(map[*lease.Manager]int{a: 22, b: 22, c: 20}, a, b, c)

	// a leaves cleanly; b and c split its partitions.
	if err := a.ReleaseAll(ctx); err != nil {
		t.Fatal(err)
	}
	tickAll(b, c)
	check(map[*lease.Manager]int{b: 32, c: 32}, b, c)
	for _, m := range []*lease.Manager{b, c} {
		if e, ok := m.Held()[63]; ok && e <= epochBefore {
			t.Errorf("partition 63 retaken with epoch %d, not above %d", e, epochBefore)
		}
	}
}
