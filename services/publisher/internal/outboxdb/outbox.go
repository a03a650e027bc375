// Package outboxdb holds every statement the publisher runs on PostgreSQL (or
// CockroachDB) but the outbox statistics, which shared/outbox reads for the API too, by
// table: the claim, mark and failure of outbox rows and the operator's
// parked rows (outbox.go), the cleanup of published records (outbox_published.go), the
// leases and heartbeats (publisher_leases.go), the idle-listener marks and LISTEN
// (outbox_listeners.go), and the maintenance of the outbox tables (maintenance.go). The
// row format is shared/outbox's; the API writes the rows (services/api/internal/
// postgres). The packages relay, lease, cleanup and wake decide when each statement
// runs.
package outboxdb

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outboxtodo/outboxtodo/shared/postgres"
)

// claimSQL reads the next batch without locking: the partition lease already makes
// this replica the only one draining these rows, and holding row locks (or a
// transaction) open across a network publish is what the lease spares us. Rows are
// unpublished rows, not rows past a cursor: a row whose transaction commits late is
// found whenever it commits.
//
// Order: a row is claimed only when it is the lowest unpublished version of its
// aggregate, counting the rows of $4 (acknowledged, their mark not yet committed) as
// published. So a batch holds at most one row per aggregate, and version N+1 is never
// sent before N was acknowledged: not when N failed (its PubAck error, timeout or
// backoff keeps it unpublished, parking too), not when N is in the batch still in
// flight, and not when N+1's created_at (the writing API replica's clock) is older
// than N's. Rows in flight ($3: sent, or acknowledged and not yet marked) are skipped,
// or they would be published twice.
//
// The rows come in the order of outbox_drain_idx (created_at, migration 00003), so the
// scan stops at the LIMIT instead of sorting the whole backlog; the lower-version check
// is one probe of outbox_aggregate_version_key per row read. OFFSET 0 keeps that check
// a per-row probe: without it PostgreSQL turns NOT EXISTS into an anti join and, with
// statistics of a backlog of some thousands of rows, hashes the whole backlog twice per
// claim (15 ms at 15,000 rows against 1.8 ms, measured), so that a claim slows as the
// backlog grows and the backlog grows faster. The probe's estimated cost is what makes
// the publisher's sessions run without JIT (postgres.PoolConfig.NoJIT). The payload is selected
// as is, not cast: PostgreSQL renders it as JSON text on output, for the rows returned
// only (a cast would be evaluated below a sort, for every row of the backlog, if the
// planner sorted: it does on a table without statistics).
const claimSQL = `
SELECT o.event_id, o.partition, o.aggregate_type, o.aggregate_id, o.aggregate_version, o.event_type,
       o.partition_key, o.payload, o.payload->'trace'->>'traceparent',
       o.payload->'trace'->>'tracestate', o.payload->'trace'->>'request_id', o.created_at, o.attempts
FROM outbox AS o
WHERE o.partition = ANY($1) AND o.published_at IS NULL AND o.parked_at IS NULL
  AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= now())
  AND o.event_id NOT IN (SELECT unnest($3::uuid[]))
  AND NOT EXISTS (
      SELECT 1 FROM outbox AS p
      WHERE p.aggregate_type = o.aggregate_type AND p.aggregate_id = o.aggregate_id
        AND p.aggregate_version < o.aggregate_version AND p.published_at IS NULL
        AND p.event_id NOT IN (SELECT unnest($4::uuid[]))
      OFFSET 0)
ORDER BY o.created_at
LIMIT $2`

// Row is one claimed outbox row.
type Row struct {
	EventID   uuid.UUID
	Partition int32
	// Epoch is the lease epoch the row was claimed under: marks and failures are
	// fenced on it.
	Epoch         int64
	AggregateType string
	AggregateID   uuid.UUID
	Version       int64
	EventType     string
	Owner         uuid.UUID
	Payload       []byte
	TraceParent   *string
	TraceState    *string
	RequestID     *string
	CreatedAt     time.Time
	Attempts      int
}

// Claim reads up to limit rows of the partitions held (each with the epoch it is held
// under), skipping the rows of acked and sent, and holding back the later versions of
// sent's aggregates (see claimSQL).
func Claim(ctx context.Context, db postgres.DBTX, held map[int32]int64, limit int, acked, sent []Row) ([]Row, error) {
	rows, err := db.Query(ctx, claimSQL, slices.Sorted(maps.Keys(held)), limit, eventIDs(acked, sent), eventIDs(acked))
	if err != nil {
		return nil, fmt.Errorf("claim outbox rows: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(rs pgx.CollectableRow) (Row, error) {
		var rw Row
		// The uuids scan as [16]byte: as uuid.UUID (an sql.Scanner) pgx would format
		// each one as a string for it to parse back.
		err := rs.Scan((*[16]byte)(&rw.EventID), &rw.Partition, &rw.AggregateType, (*[16]byte)(&rw.AggregateID), &rw.Version,
			&rw.EventType, (*[16]byte)(&rw.Owner), &rw.Payload, &rw.TraceParent, &rw.TraceState, &rw.RequestID, &rw.CreatedAt, &rw.Attempts)
		rw.Epoch = held[rw.Partition]
		return rw, err
	})
	if err != nil {
		return nil, fmt.Errorf("claim outbox rows: %w", err)
	}
	return out, nil
}

// markSQL marks acknowledged rows published, fenced: only rows whose partition this
// replica still holds, with the epoch it claimed them under, on a lease that has not
// expired. The lease is joined on the partition passed in with each row (not on the
// outbox row's): otherwise the planner pairs rows and leases by epoch alone and probes
// the outbox rows times partitions.
//
// Marking deletes the row from the outbox and records it in outbox_published (migration
// 00007), without its payload. An UPDATE of published_at could not be a HOT update
// (published_at is in the outbox's partial-index predicates): it wrote a new copy of
// the whole row and an entry in three indexes of the table the API inserts into. A
// delete writes no index entry, the narrow record one in two small append-only
// indexes, and the outbox keeps only the backlog. The rows are ids as [16]byte (see
// fence).
const markSQL = `
WITH marked AS (
    DELETE FROM outbox AS o
    WHERE (o.event_id, o.partition) IN (
        SELECT a.event_id, a.partition
        FROM unnest($1::uuid[], $2::int[], $3::bigint[]) AS a(event_id, partition, epoch)
             JOIN publisher_leases AS l ON l.partition = a.partition AND l.epoch = a.epoch
        WHERE l.owner = $4 AND l.expires_at > now())
      AND o.published_at IS NULL
    RETURNING o.event_id, o.partition, o.aggregate_type, o.aggregate_id, o.aggregate_version, o.event_type, o.created_at)
INSERT INTO outbox_published (event_id, partition, aggregate_type, aggregate_id, aggregate_version, event_type, created_at, published_at)
SELECT event_id, partition, aggregate_type, aggregate_id, aggregate_version, event_type, created_at, now()
FROM marked`

// MarkPublished marks rows published for owner and returns how many it marked; the
// others were fenced off (see markSQL).
func MarkPublished(ctx context.Context, db postgres.DBTX, rows []Row, owner string) (int, error) {
	if len(rows) == 0 {
		return 0, nil
	}
	ids, parts, epochs := fence(rows)
	tag, err := db.Exec(ctx, markSQL, ids, parts, epochs, owner)
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

// RecordFailures counts a failed attempt on each row for owner, with errs[i] as row
// i's error and delays[i] before its next attempt, parks the rows that reached
// maxAttempts, and returns how many it parked; fenced like MarkPublished.
func RecordFailures(ctx context.Context, db postgres.DBTX, rows []Row, errs []string, delays []time.Duration, maxAttempts int, owner string) (int, error) {
	ids, parts, epochs := fence(rows)
	delayMs := make([]int64, len(delays))
	for i, d := range delays {
		delayMs[i] = d.Milliseconds()
	}
	res, err := db.Query(ctx, failSQL, ids, parts, epochs, errs, delayMs, maxAttempts, owner)
	if err != nil {
		return 0, fmt.Errorf("record %d failed publishes: %w", len(rows), err)
	}
	parked, err := pgx.CollectRows(res, pgx.RowTo[bool])
	if err != nil {
		return 0, fmt.Errorf("record %d failed publishes: %w", len(rows), err)
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
// under, as the arrays markSQL and failSQL take. The ids go as [16]byte, which pgx
// encodes directly: a uuid.UUID goes through its driver.Valuer, a string that pgx
// fails to encode as binary (building an error) before it parses it back, per element.
func fence(rows []Row) (ids [][16]byte, parts []int32, epochs []int64) {
	ids = make([][16]byte, len(rows))
	parts = make([]int32, len(rows))
	epochs = make([]int64, len(rows))
	for i, rw := range rows {
		ids[i], parts[i], epochs[i] = rw.EventID, rw.Partition, rw.Epoch
	}
	return ids, parts, epochs
}

// eventIDs returns the ids of every row of sets, as [16]byte (see fence).
func eventIDs(sets ...[]Row) [][16]byte {
	var ids [][16]byte
	for _, rows := range sets {
		for _, rw := range rows {
			ids = append(ids, rw.EventID)
		}
	}
	return ids
}

// Parked is one parked outbox row: one the publisher gave up on after MAX_ATTEMPTS
// failed publishes.
type Parked struct {
	EventID       uuid.UUID `json:"event_id"`
	EventType     string    `json:"event_type"`
	AggregateType string    `json:"aggregate_type"`
	AggregateID   uuid.UUID `json:"aggregate_id"`
	Version       int64     `json:"aggregate_version"`
	Attempts      int       `json:"attempts"`
	LastError     string    `json:"last_error"`
	CreatedAt     time.Time `json:"created_at"`
	ParkedAt      time.Time `json:"parked_at"`
}

const listParkedSQL = `
SELECT event_id, event_type, aggregate_type, aggregate_id, aggregate_version, attempts,
       coalesce(last_error, ''), created_at, parked_at
FROM outbox WHERE parked_at IS NOT NULL AND published_at IS NULL
ORDER BY parked_at LIMIT $1`

// ListParked returns up to limit parked rows, oldest first, with why they failed.
func ListParked(ctx context.Context, db postgres.DBTX, limit int) ([]Parked, error) {
	rows, err := db.Query(ctx, listParkedSQL, limit)
	if err != nil {
		return nil, fmt.Errorf("list parked rows: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Parked, error) {
		var p Parked
		err := r.Scan(&p.EventID, &p.EventType, &p.AggregateType, &p.AggregateID, &p.Version, &p.Attempts, &p.LastError, &p.CreatedAt, &p.ParkedAt)
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("list parked rows: %w", err)
	}
	return out, nil
}

const unparkSQL = `
UPDATE outbox SET parked_at = NULL, next_attempt_at = NULL, attempts = 0
WHERE parked_at IS NOT NULL AND published_at IS NULL`

// RetryParked unparks the given rows, or every parked row when ids is empty, and
// returns how many it unparked. Their attempts start again from zero, and the drain
// picks them up at its next claim, ahead of the later versions that waited behind
// them.
func RetryParked(ctx context.Context, db postgres.DBTX, ids []uuid.UUID) (int64, error) {
	var (
		tag pgconn.CommandTag
		err error
	)
	if len(ids) == 0 {
		tag, err = db.Exec(ctx, unparkSQL)
	} else {
		tag, err = db.Exec(ctx, unparkSQL+" AND event_id = ANY($1)", ids)
	}
	if err != nil {
		return 0, fmt.Errorf("retry parked rows: %w", err)
	}
	return tag.RowsAffected(), nil
}

// deleteLegacyPublishedSQL deletes a bounded batch of the rows that releases before
// migration 00007 marked published in the outbox itself, by the index on
// published_at; PostgreSQL and CockroachDB both run DELETE ... WHERE key IN (SELECT
// ... LIMIT n).
const deleteLegacyPublishedSQL = `
DELETE FROM outbox WHERE event_id IN (
    SELECT event_id FROM outbox
    WHERE published_at IS NOT NULL
      AND published_at < now() - $1::bigint * interval '1 millisecond'
      AND partition = ANY($2)
    LIMIT $3)`

// deleteLegacyPublished is the Cleanup of deleteLegacyPublishedSQL.
var deleteLegacyPublished = cleanup(deleteLegacyPublishedSQL)
