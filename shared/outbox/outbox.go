// Package outbox is the format of the outbox table that the API writes and the
// publisher drains: one row per event, inserted in the transaction of the change it
// describes.
package outbox

import (
	"context"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/postgres"
)

// Partitions is the fixed number of outbox partitions. Every event of one owner lands in
// the same partition, so one publisher at a time relays all of a user's events in
// order. Changing it re-homes users between partitions: drain the outbox first.
const Partitions = 64

// PartitionOf maps an owning user to its partition with a stable hash (FNV-1a of the
// UUID's 16 bytes), identical in every service and every release.
func PartitionOf(owner uuid.UUID) int32 {
	h := fnv.New32a()
	_, _ = h.Write(owner[:])
	return int32(h.Sum32() % Partitions)
}

// insertSQL writes one row per event and puts the owner's stats snapshot (see
// event.Stats) into each payload from user_stats, as the statement sees it: after the
// change's own update of that row when the batch holds one before it, since both run
// in one transaction. An owner without a user_stats row (no such user) gets no stats.
const insertSQL = `
INSERT INTO outbox (event_id, aggregate_type, aggregate_id, aggregate_version, event_type,
                    partition_key, partition, payload, created_at)
SELECT e.id, e.agg_type, e.agg_id, e.version, e.type, e.owner, e.part,
       CASE WHEN s.user_id IS NULL THEN e.payload
            ELSE e.payload || jsonb_build_object('stats', jsonb_build_object(
                'open', s.open, 'completed', s.completed, 'version', s.version, 'deleted', s.deleted))
       END,
       e.created
FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::bigint[], $5::text[],
            $6::uuid[], $7::int[], $8::jsonb[], $9::timestamptz[])
     AS e(id, agg_type, agg_id, version, type, owner, part, payload, created)
LEFT JOIN user_stats s ON s.user_id = e.owner`

// Insert writes one outbox row per event in a single statement, each with its owner's
// stats snapshot (see insertSQL). Call it with the transaction that makes the change,
// never with a pool.
func Insert(ctx context.Context, tx postgres.DBTX, events ...event.Envelope) error {
	if len(events) == 0 {
		return nil
	}
	args, err := insertArgs(events)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, insertSQL, args...); err != nil {
		return fmt.Errorf("insert %d outbox rows: %w", len(events), err)
	}
	return nil
}

// QueueInsert queues the statement of Insert on b, so that a change and its outbox rows
// reach the database in one round trip. Send b with the transaction that makes the
// change.
func QueueInsert(b *pgx.Batch, events ...event.Envelope) error {
	if len(events) == 0 {
		return nil
	}
	args, err := insertArgs(events)
	if err != nil {
		return err
	}
	b.Queue(insertSQL, args...)
	return nil
}

// Committed tells whether the transaction that inserted e's row committed, when its
// commit's answer was lost (see postgres.ProbeInsert): the event id is the row's key,
// chosen before the commit. The publisher may have published the row already, which
// moves it from the outbox to outbox_published: that table is read after the probe,
// so that a row moved while the probe ran (the probe then waits for the move's
// transaction and finds no conflict) is found there.
func Committed(ctx context.Context, db postgres.Beginner, e event.Envelope) (bool, error) {
	args, err := insertArgs([]event.Envelope{e})
	if err != nil {
		return false, err
	}
	committed, err := postgres.ProbeInsert(ctx, db, insertSQL+` ON CONFLICT (event_id) DO NOTHING`, args...)
	if err != nil {
		return false, fmt.Errorf("event %s: %w", e.ID, err)
	}
	if committed {
		return true, nil
	}
	tx, err := db.Begin(ctx)
	if err != nil {
		return false, fmt.Errorf("event %s: look up published: %w", e.ID, err)
	}
	defer func() {
		rbCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = tx.Rollback(rbCtx) // it only read
	}()
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM outbox_published WHERE event_id = $1)`, [16]byte(e.ID)).Scan(&committed); err != nil {
		return false, fmt.Errorf("event %s: look up published: %w", e.ID, err)
	}
	return committed, nil
}

func insertArgs(events []event.Envelope) ([]any, error) {
	n := len(events)
	var (
		// [16]byte, not uuid.UUID: pgx encodes raw arrays directly, while a
		// uuid.UUID element goes through its text form.
		ids        = make([][16]byte, n)
		aggTypes   = make([]string, n)
		aggIDs     = make([][16]byte, n)
		versions   = make([]int64, n)
		types      = make([]string, n)
		owners     = make([][16]byte, n)
		partitions = make([]int32, n)
		payloads   = make([]string, n)
		created    = make([]time.Time, n)
	)
	for i, e := range events {
		b, err := e.Encode()
		if err != nil {
			return nil, err
		}
		ids[i], aggTypes[i], aggIDs[i], versions[i], types[i] = e.ID, e.AggregateType, e.AggregateID, e.Version, e.Type
		owners[i], partitions[i], payloads[i], created[i] = e.OwnerID, PartitionOf(e.OwnerID), string(b), e.OccurredAt
	}
	return []any{ids, aggTypes, aggIDs, versions, types, owners, partitions, payloads, created}, nil
}
