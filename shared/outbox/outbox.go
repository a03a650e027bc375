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

const insertSQL = `
INSERT INTO outbox (event_id, aggregate_type, aggregate_id, aggregate_version, event_type,
                    partition_key, partition, payload, created_at)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::bigint[], $5::text[],
                     $6::uuid[], $7::int[], $8::jsonb[], $9::timestamptz[])`

// Insert writes one outbox row per event in a single statement. Call it with the
// transaction that makes the change, never with a pool.
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
