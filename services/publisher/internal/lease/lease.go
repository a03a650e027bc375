// Package lease hands the outbox partitions out to publisher replicas so that each
// partition (and so each aggregate) is relayed by one replica at a time.
//
// Every replica heartbeats a row in publisher_replicas, counts the live replicas n and
// holds about ceil(partitions / n) leases in publisher_leases: it renews the ones it
// holds, takes free or expired ones while it has fewer, and releases the extras when
// replicas join. A lease is valid while its expires_at (database clock, so replicas'
// clocks do not matter) is in the future; every acquisition bumps its epoch. Writers
// fence on (owner, epoch, unexpired), see Held, so a replica that stalled past its
// lease cannot mark rows of a partition another replica has since taken (the mark
// joins publisher_leases: outboxdb.MarkPublished).
//
// The statements are package outboxdb's.
package lease

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxtodo/outboxtodo/services/publisher/internal/outboxdb"
)

// Held maps each partition this replica holds to the epoch it was acquired with.
type Held map[int32]int64

// Partitions returns the held partitions in ascending order.
func (h Held) Partitions() []int32 {
	return slices.Sorted(maps.Keys(h))
}

// Manager keeps this replica's share of leases. Create it with New, run Run in one
// goroutine; Held and Acquired are safe to call from others.
type Manager struct {
	pool       *pgxpool.Pool
	owner      string
	partitions int
	ttl        time.Duration
	log        *slog.Logger

	rowsReady bool // lease rows exist; only Tick touches it

	mu      sync.Mutex
	held    Held
	changed chan struct{}
	// OnChange, when set before Run, is called with the number of held leases after
	// every tick (for metrics).
	onChange func(n int)
}

// New returns a Manager for owner (unique per replica process) over partitions
// partitions, with leases of ttl.
func New(pool *pgxpool.Pool, owner string, partitions int, ttl time.Duration, log *slog.Logger) *Manager {
	return &Manager{
		pool:       pool,
		owner:      owner,
		partitions: partitions,
		ttl:        ttl,
		log:        log,
		held:       Held{},
		changed:    make(chan struct{}, 1),
	}
}

// OnChange registers f to receive the number of held leases after every tick. Call it
// before Run.
func (m *Manager) OnChange(f func(n int)) { m.onChange = f }

// Owner is this replica's name in the lease table.
func (m *Manager) Owner() string { return m.owner }

// Held returns a copy of the leases held as of the last tick. A lease may have expired
// since; writers must fence on owner, epoch and expiry in SQL.
func (m *Manager) Held() Held {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.held)
}

// Acquired receives a value after a tick that acquired new partitions, so the relay can
// drain them at once.
func (m *Manager) Acquired() <-chan struct{} { return m.changed }

// Run ticks every third of the TTL until ctx is cancelled, then releases every lease
// (with a short timeout of its own) so other replicas take over at once. A failing tick
// is logged and retried at the next one; leases it could not renew expire on their own.
func (m *Manager) Run(ctx context.Context) error {
	interval := m.ttl / 3
	for {
		if err := m.Tick(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("lease tick failed", "error", err)
		}
		select {
		case <-ctx.Done():
			relCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := m.ReleaseAll(relCtx); err != nil {
				return fmt.Errorf("release leases: %w", err)
			}
			return nil
		case <-time.After(interval):
		}
	}
}

// Tick heartbeats, renews, releases extras and acquires up to the fair share. Every
// statement is bounded by the TTL: a tick slower than that has lost its leases anyway.
func (m *Manager) Tick(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, m.ttl)
	defer cancel()
	if err := m.ensureRows(ctx); err != nil {
		return err
	}
	live, err := outboxdb.Heartbeat(ctx, m.pool, m.owner, m.ttl)
	if err != nil {
		return err
	}
	target := (m.partitions + live - 1) / live
	renewed, err := outboxdb.RenewLeases(ctx, m.pool, m.owner, m.ttl)
	if err != nil {
		return err
	}
	held, acquired := Held(renewed), 0
	switch {
	case len(held) > target:
		err = m.releaseExtras(ctx, held, target, live)
	case len(held) < target:
		acquired, err = m.acquire(ctx, held, target, live)
	}
	if err != nil {
		return err
	}
	m.update(held, acquired)
	// Forget replicas dead for long; the count above ignores them already.
	if rand.IntN(10) == 0 {
		return outboxdb.ForgetDeadReplicas(ctx, m.pool)
	}
	return nil
}

// ensureRows creates the lease rows on first start.
func (m *Manager) ensureRows(ctx context.Context) error {
	if m.rowsReady {
		return nil
	}
	if err := outboxdb.EnsureLeases(ctx, m.pool, m.partitions); err != nil {
		return err
	}
	m.rowsReady = true
	return nil
}

// releaseExtras gives back the leases of held beyond target, the highest partitions:
// every replica agrees on that order, so the ones released are the ones a newcomer
// finds free first.
func (m *Manager) releaseExtras(ctx context.Context, held Held, target, live int) error {
	extra := held.Partitions()[target:]
	if err := outboxdb.ReleaseLeases(ctx, m.pool, m.owner, extra); err != nil {
		return fmt.Errorf("release %d extra leases: %w", len(extra), err)
	}
	for _, p := range extra {
		delete(held, p)
	}
	m.log.Info("released leases to rebalance", "released", len(extra), "held", len(held), "replicas", live)
	return nil
}

// acquire takes free or expired leases into held, up to target, and returns how many
// it took.
func (m *Manager) acquire(ctx context.Context, held Held, target, live int) (int, error) {
	got, err := outboxdb.AcquireLeases(ctx, m.pool, m.owner, m.ttl, target-len(held))
	if err != nil {
		return 0, err
	}
	maps.Copy(held, got)
	if len(got) > 0 {
		m.log.Info("acquired leases", "acquired", len(got), "held", len(held), "replicas", live)
	}
	return len(got), nil
}

// update makes held the leases Held reports, and tells OnChange and, when the tick
// acquired partitions, Acquired.
func (m *Manager) update(held Held, acquired int) {
	m.mu.Lock()
	m.held = held
	m.mu.Unlock()
	if m.onChange != nil {
		m.onChange(len(held))
	}
	if acquired > 0 {
		select {
		case m.changed <- struct{}{}:
		default:
		}
	}
}

// ReleaseAll gives every lease back and removes this replica's heartbeat, so the others
// rebalance without waiting for expiry.
func (m *Manager) ReleaseAll(ctx context.Context) error {
	m.mu.Lock()
	m.held = Held{}
	m.mu.Unlock()
	return outboxdb.ReleaseAll(ctx, m.pool, m.owner)
}
