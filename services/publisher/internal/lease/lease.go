// Package lease hands the outbox partitions out to publisher replicas so that each
// partition (and so each aggregate) is relayed by one replica at a time.
//
// Every replica heartbeats a row in publisher_replicas, counts the live replicas n and
// holds about ceil(partitions / n) leases in publisher_leases: it renews the ones it
// holds, takes free or expired ones while it has fewer, and releases the extras when
// replicas join. A lease is valid while its expires_at (database clock, so replicas'
// clocks do not matter) is in the future; every acquisition bumps its epoch. Writers
// fence on (owner, epoch, unexpired), see Held, so a replica that stalled past its
// lease cannot mark rows of a partition another replica has since taken (the relay
// joins publisher_leases in its mark-published UPDATE).
//
// The SQL is plain UPDATE/INSERT on two small tables: it runs on PostgreSQL and
// CockroachDB, without advisory locks.
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
)

// Held maps each partition this replica holds to the epoch it was acquired with.
type Held map[int32]int64

// Partitions returns the held partitions in ascending order.
func (h Held) Partitions() []int32 {
	return slices.Sorted(maps.Keys(h))
}

// Manager keeps this replica's share of leases. Create it with New, run Run in one
// goroutine; Held and Changed are safe to call from others.
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

// ensureRows creates the lease rows on first start; the partition count lives in code
// (shared/outbox.Partitions), not in the migration.
func (m *Manager) ensureRows(ctx context.Context) error {
	_, err := m.pool.Exec(ctx, `
INSERT INTO publisher_leases (partition, owner, epoch, expires_at)
SELECT p, '', 0, now() FROM generate_series(0, $1::int - 1) AS p
ON CONFLICT (partition) DO NOTHING`, m.partitions)
	if err != nil {
		return fmt.Errorf("create lease rows: %w", err)
	}
	return nil
}

// Tick heartbeats, renews, releases extras and acquires up to the fair share. Every
// statement is bounded by the TTL: a tick slower than that has lost its leases anyway.
func (m *Manager) Tick(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, m.ttl)
	defer cancel()
	ttlMs := m.ttl.Milliseconds()
	if !m.rowsReady {
		if err := m.ensureRows(ctx); err != nil {
			return err
		}
		m.rowsReady = true
	}

	var live int
	err := m.pool.QueryRow(ctx, `
WITH hb AS (
    INSERT INTO publisher_replicas (replica_id, expires_at)
    VALUES ($1, now() + $2::bigint * interval '1 millisecond')
    ON CONFLICT (replica_id) DO UPDATE SET expires_at = excluded.expires_at
    RETURNING replica_id)
SELECT 1 + count(*) FROM publisher_replicas WHERE expires_at > now() AND replica_id <> $1`,
		m.owner, ttlMs).Scan(&live)
	if err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	target := (m.partitions + live - 1) / live

	held, err := m.collect(ctx, `
UPDATE publisher_leases SET expires_at = now() + $2::bigint * interval '1 millisecond'
WHERE owner = $1 AND expires_at > now()
RETURNING partition, epoch`, m.owner, ttlMs)
	if err != nil {
		return fmt.Errorf("renew leases: %w", err)
	}

	acquired := 0
	switch {
	case len(held) > target:
		// Give back the highest partitions: every replica agrees on that order, so the
		// ones released are the ones a newcomer finds free first.
		parts := held.Partitions()
		extra := parts[target:]
		if _, err := m.pool.Exec(ctx, `
UPDATE publisher_leases SET owner = '', expires_at = now()
WHERE owner = $1 AND partition = ANY($2)`, m.owner, extra); err != nil {
			return fmt.Errorf("release %d extra leases: %w", len(extra), err)
		}
		for _, p := range extra {
			delete(held, p)
		}
		m.log.Info("released leases to rebalance", "released", len(extra), "held", len(held), "replicas", live)
	case len(held) < target:
		// Random order spreads concurrent acquirers over different rows; the re-check of
		// expires_at in the outer UPDATE makes a row go to one of them only.
		got, err := m.collect(ctx, `
UPDATE publisher_leases
SET owner = $1, epoch = epoch + 1, expires_at = now() + $2::bigint * interval '1 millisecond'
WHERE partition IN (
    SELECT partition FROM publisher_leases WHERE expires_at <= now() ORDER BY random() LIMIT $3)
  AND expires_at <= now()
RETURNING partition, epoch`, m.owner, ttlMs, target-len(held))
		if err != nil {
			return fmt.Errorf("acquire leases: %w", err)
		}
		maps.Copy(held, got)
		acquired = len(got)
		if acquired > 0 {
			m.log.Info("acquired leases", "acquired", acquired, "held", len(held), "replicas", live)
		}
	}

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
	// Forget replicas dead for long; the count above ignores them already.
	if rand.IntN(10) == 0 {
		if _, err := m.pool.Exec(ctx, `DELETE FROM publisher_replicas WHERE expires_at < now() - interval '1 hour'`); err != nil {
			return fmt.Errorf("forget dead replicas: %w", err)
		}
	}
	return nil
}

// ReleaseAll gives every lease back and removes this replica's heartbeat, so the others
// rebalance without waiting for expiry.
func (m *Manager) ReleaseAll(ctx context.Context) error {
	m.mu.Lock()
	m.held = Held{}
	m.mu.Unlock()
	if _, err := m.pool.Exec(ctx, `UPDATE publisher_leases SET owner = '', expires_at = now() WHERE owner = $1`, m.owner); err != nil {
		return err
	}
	if _, err := m.pool.Exec(ctx, `DELETE FROM publisher_replicas WHERE replica_id = $1`, m.owner); err != nil {
		return err
	}
	return nil
}

func (m *Manager) collect(ctx context.Context, sql string, args ...any) (Held, error) {
	rows, err := m.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	h := Held{}
	for rows.Next() {
		var (
			p int32
			e int64
		)
		if err := rows.Scan(&p, &e); err != nil {
			return nil, err
		}
		h[p] = e
	}
	return h, rows.Err()
}
