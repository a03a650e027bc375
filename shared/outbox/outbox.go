// Package outbox is the contract between the outbox's writer, the API
// (services/api/internal/postgres), and its reader, the publisher
// (services/publisher/internal/outboxdb): the row format of the outbox table, the
// partition function, the channel of the notification that wakes the publisher, and
// the outbox's state as both report it. Each side keeps its own statements. Like the
// rest of shared, it makes no compatibility promises outside this repository.
package outbox

import (
	"hash/fnv"

	"github.com/google/uuid"

	"github.com/outboxtodo/outboxtodo/shared/event"
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

// Table is the outbox table: one row per event, inserted in the transaction of the
// change it describes.
const Table = "outbox"

// Columns are the columns a writer fills, in the order of Row's values; the others
// (published_at, attempts, parked_at, ...) are the publisher's.
var Columns = []string{"event_id", "aggregate_type", "aggregate_id", "aggregate_version", "event_type",
	"partition_key", "partition", "payload", "created_at"}

// Row is e's outbox row, its values for Columns: the event's identity, its owner as
// the partition key with the owner's partition, the encoded event as the payload, and
// the time it occurred. The API's writes put the owner's stats snapshot (event.Stats)
// into the payload from user_stats as they insert; a writer that copies rows in sets
// e.Stats itself.
func Row(e event.Envelope) ([]any, error) {
	payload, err := e.Encode()
	if err != nil {
		return nil, err
	}
	return []any{e.ID, e.AggregateType, e.AggregateID, e.Version, e.Type,
		e.OwnerID, PartitionOf(e.OwnerID), string(payload), e.OccurredAt}, nil
}
