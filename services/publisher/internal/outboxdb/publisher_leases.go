package outboxdb

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboxtodo/outboxtodo/shared/postgres"
)

// The statements on publisher_replicas and publisher_leases: plain UPDATE/INSERT on two
// small tables, which run on PostgreSQL and CockroachDB, without advisory locks.
// Expiry times are on the database clock, so the replicas' clocks do not matter.
const (
	// ensureLeasesSQL creates the lease rows on first start; the partition count lives
	// in code (shared/outbox.Partitions), not in the migration.
	ensureLeasesSQL = `
INSERT INTO publisher_leases (partition, owner, epoch, expires_at)
SELECT p, '', 0, now() FROM generate_series(0, $1::int - 1) AS p
ON CONFLICT (partition) DO NOTHING`
	heartbeatSQL = `
WITH hb AS (
    INSERT INTO publisher_replicas (replica_id, expires_at)
    VALUES ($1, now() + $2::bigint * interval '1 millisecond')
    ON CONFLICT (replica_id) DO UPDATE SET expires_at = excluded.expires_at
    RETURNING replica_id)
SELECT 1 + count(*) FROM publisher_replicas WHERE expires_at > now() AND replica_id <> $1`
	renewLeasesSQL = `
UPDATE publisher_leases SET expires_at = now() + $2::bigint * interval '1 millisecond'
WHERE owner = $1 AND expires_at > now()
RETURNING partition, epoch`
	releaseLeasesSQL = `
UPDATE publisher_leases SET owner = '', expires_at = now()
WHERE owner = $1 AND partition = ANY($2)`
	// acquireLeasesSQL takes free or expired leases in random order, which spreads
	// concurrent acquirers over different rows; the re-check of expires_at in the
	// outer UPDATE makes a row go to one of them only. Every acquisition bumps the
	// epoch.
	acquireLeasesSQL = `
UPDATE publisher_leases
SET owner = $1, epoch = epoch + 1, expires_at = now() + $2::bigint * interval '1 millisecond'
WHERE partition IN (
    SELECT partition FROM publisher_leases WHERE expires_at <= now() ORDER BY random() LIMIT $3)
  AND expires_at <= now()
RETURNING partition, epoch`
	forgetReplicasSQL   = `DELETE FROM publisher_replicas WHERE expires_at < now() - interval '1 hour'`
	releaseAllLeasesSQL = `UPDATE publisher_leases SET owner = '', expires_at = now() WHERE owner = $1`
	removeReplicaSQL    = `DELETE FROM publisher_replicas WHERE replica_id = $1`
)

// EnsureLeases creates the rows of partitions leases, free, where they are missing.
func EnsureLeases(ctx context.Context, db postgres.DBTX, partitions int) error {
	if _, err := db.Exec(ctx, ensureLeasesSQL, partitions); err != nil {
		return fmt.Errorf("create lease rows: %w", err)
	}
	return nil
}

// Heartbeat records that replica lives for ttl more and returns how many replicas
// live, itself included.
func Heartbeat(ctx context.Context, db postgres.DBTX, replica string, ttl time.Duration) (int, error) {
	var live int
	if err := db.QueryRow(ctx, heartbeatSQL, replica, ttl.Milliseconds()).Scan(&live); err != nil {
		return 0, fmt.Errorf("heartbeat: %w", err)
	}
	return live, nil
}

// RenewLeases extends owner's unexpired leases by ttl and returns them, each partition
// with its epoch.
func RenewLeases(ctx context.Context, db postgres.DBTX, owner string, ttl time.Duration) (map[int32]int64, error) {
	held, err := leases(db.Query(ctx, renewLeasesSQL, owner, ttl.Milliseconds()))
	if err != nil {
		return nil, fmt.Errorf("renew leases: %w", err)
	}
	return held, nil
}

// AcquireLeases takes up to n free or expired leases for owner, for ttl, and returns
// them, each partition with its new epoch.
func AcquireLeases(ctx context.Context, db postgres.DBTX, owner string, ttl time.Duration, n int) (map[int32]int64, error) {
	got, err := leases(db.Query(ctx, acquireLeasesSQL, owner, ttl.Milliseconds(), n))
	if err != nil {
		return nil, fmt.Errorf("acquire leases: %w", err)
	}
	return got, nil
}

// ReleaseLeases frees owner's leases of partitions at once.
func ReleaseLeases(ctx context.Context, db postgres.DBTX, owner string, partitions []int32) error {
	_, err := db.Exec(ctx, releaseLeasesSQL, owner, partitions)
	return err
}

// ForgetDeadReplicas deletes the heartbeats of replicas dead for an hour; the count of
// live replicas ignores them already.
func ForgetDeadReplicas(ctx context.Context, db postgres.DBTX) error {
	if _, err := db.Exec(ctx, forgetReplicasSQL); err != nil {
		return fmt.Errorf("forget dead replicas: %w", err)
	}
	return nil
}

// ReleaseAll frees every lease of owner and removes its heartbeat, so that the other
// replicas rebalance without waiting for expiry.
func ReleaseAll(ctx context.Context, db postgres.DBTX, owner string) error {
	if _, err := db.Exec(ctx, releaseAllLeasesSQL, owner); err != nil {
		return err
	}
	if _, err := db.Exec(ctx, removeReplicaSQL, owner); err != nil {
		return err
	}
	return nil
}

// leases reads (partition, epoch) rows.
func leases(rows pgx.Rows, err error) (map[int32]int64, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	h := map[int32]int64{}
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
