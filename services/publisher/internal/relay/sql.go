package relay

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/outboxtodo/outboxtodo/services/publisher/internal/lease"
)

// claimSQL reads the next batch without locking: the partition lease already makes
// this replica the only one draining these rows, and holding row locks (or a
// transaction) open across a network publish is what the lease spares us. Rows are
// unpublished rows, not rows past a cursor: a row whose transaction commits late is
// found whenever it commits. An aggregate with an earlier row in backoff or parked is
// skipped from that version on, so its order holds. The batch is chosen on narrow
// columns first: rendering the payloads of the whole backlog before the sort would cost
// ten times more than the sort itself.
const claimSQL = `
WITH blocked AS (
    SELECT aggregate_type, aggregate_id, min(aggregate_version) AS version
    FROM outbox
    WHERE partition = ANY($1) AND published_at IS NULL
      AND (next_attempt_at IS NOT NULL OR parked_at IS NOT NULL)
      AND (parked_at IS NOT NULL OR next_attempt_at > now())
    GROUP BY aggregate_type, aggregate_id),
next AS (
    SELECT o.event_id
    FROM outbox AS o
    WHERE o.partition = ANY($1) AND o.published_at IS NULL AND o.parked_at IS NULL
      AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= now())
      AND NOT EXISTS (
          SELECT 1 FROM blocked AS b
          WHERE b.aggregate_type = o.aggregate_type AND b.aggregate_id = o.aggregate_id
            AND b.version < o.aggregate_version)
    ORDER BY o.created_at
    LIMIT $2)
SELECT o.event_id, o.partition, o.aggregate_type, o.aggregate_id, o.aggregate_version, o.event_type,
       o.partition_key, o.payload::text, o.payload->'trace'->>'traceparent',
       o.payload->'trace'->>'tracestate', o.created_at, o.attempts
FROM next JOIN outbox AS o ON o.event_id = next.event_id`

func (r *Relay) claim(ctx context.Context, held lease.Held) ([]row, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.PublishTimeout)
	defer cancel()
	rows, err := r.pool.Query(ctx, claimSQL, held.Partitions(), r.opts.BatchSize)
	if err != nil {
		return nil, fmt.Errorf("claim outbox rows: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(rs pgx.CollectableRow) (row, error) {
		var rw row
		err := rs.Scan(&rw.eventID, &rw.partition, &rw.aggType, &rw.aggID, &rw.version, &rw.eventType,
			&rw.owner, &rw.payload, &rw.traceParent, &rw.traceState, &rw.createdAt, &rw.attempts)
		rw.epoch = held[rw.partition]
		return rw, err
	})
	if err != nil {
		return nil, fmt.Errorf("claim outbox rows: %w", err)
	}
	return out, nil
}

// markSQL marks acknowledged rows published in one statement, fenced: only rows whose
// partition this replica still holds, with the epoch it claimed them under, on a lease
// that has not expired. The lease is joined on the partition passed in with each row
// (not on the outbox row's): otherwise the planner pairs rows and leases by epoch alone
// and probes the outbox rows times partitions.
const markSQL = `
UPDATE outbox AS o SET published_at = now()
FROM unnest($1::uuid[], $2::int[], $3::bigint[]) AS a(event_id, partition, epoch)
     JOIN publisher_leases AS l ON l.partition = a.partition AND l.epoch = a.epoch
WHERE o.event_id = a.event_id AND o.partition = a.partition AND o.published_at IS NULL
  AND l.owner = $4 AND l.expires_at > now()`

// markPublished returns how many of rows it marked; the others were fenced off.
func (r *Relay) markPublished(ctx context.Context, rows []row) (int, error) {
	if len(rows) == 0 {
		return 0, nil
	}
	ids, parts, epochs := fence(rows)
	ctx, cancel := context.WithTimeout(ctx, r.opts.PublishTimeout)
	defer cancel()
	tag, err := r.pool.Exec(ctx, markSQL, ids, parts, epochs, r.leases.Owner())
	if err != nil {
		return 0, fmt.Errorf("mark %d rows published: %w", len(rows), err)
	}
	return int(tag.RowsAffected()), nil
}

// failSQL counts a failed attempt on each row, sets its next attempt time and parks it
// at the attempt limit; fenced like markSQL.
const failSQL = `
UPDATE outbox AS o
SET attempts = o.attempts + 1,
    last_error = a.err,
    next_attempt_at = now() + a.delay_ms * interval '1 millisecond',
    parked_at = CASE WHEN o.attempts + 1 >= $6 THEN now() END
FROM unnest($1::uuid[], $2::int[], $3::bigint[], $4::text[], $5::bigint[]) AS a(event_id, partition, epoch, err, delay_ms)
     JOIN publisher_leases AS l ON l.partition = a.partition AND l.epoch = a.epoch
WHERE o.event_id = a.event_id AND o.partition = a.partition AND o.published_at IS NULL
  AND l.owner = $7 AND l.expires_at > now()
RETURNING o.parked_at IS NOT NULL`

// recordFailures returns how many rows it parked.
func (r *Relay) recordFailures(ctx context.Context, rows []row, errs []string) (int, error) {
	n := len(rows)
	ids, parts, epochs := fence(rows)
	delays := make([]int64, n)
	for i, rw := range rows {
		delays[i] = r.backoff(rw.attempts).Milliseconds()
		if len(errs[i]) > 1000 {
			errs[i] = errs[i][:1000]
		}
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.PublishTimeout)
	defer cancel()
	res, err := r.pool.Query(ctx, failSQL, ids, parts, epochs, errs, delays, r.opts.MaxAttempts, r.leases.Owner())
	if err != nil {
		return 0, fmt.Errorf("record %d failed publishes: %w", n, err)
	}
	parked, err := pgx.CollectRows(res, pgx.RowTo[bool])
	if err != nil {
		return 0, fmt.Errorf("record %d failed publishes: %w", n, err)
	}
	count := 0
	for _, p := range parked {
		if p {
			count++
		}
	}
	return count, nil
}

// fence returns the rows' ids with the partitions and lease epochs they were claimed
// under, as the arrays markSQL and failSQL take.
func fence(rows []row) (ids []uuid.UUID, parts []int32, epochs []int64) {
	ids = make([]uuid.UUID, len(rows))
	parts = make([]int32, len(rows))
	epochs = make([]int64, len(rows))
	for i, rw := range rows {
		ids[i], parts[i], epochs[i] = rw.eventID, rw.partition, rw.epoch
	}
	return ids, parts, epochs
}
