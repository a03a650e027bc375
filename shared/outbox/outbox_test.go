package outbox_test

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/outbox"
)

// Row fills every column of Columns, in order, from the event.
func TestRowFollowsColumns(t *testing.T) {
	t.Parallel()
	owner, id := uuid.New(), uuid.New()
	now := time.Now().UTC()
	e, err := event.New(event.TodoCreated, id, owner, 3, now, event.TraceContext{RequestID: "r"},
		event.TodoData{ID: id, UserID: owner, Title: "t", Priority: "low", Version: 3, CreatedAt: now, UpdatedAt: now})
	if err != nil {
		t.Fatal(err)
	}
	row, err := outbox.Row(e)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"event_id": e.ID, "aggregate_type": event.AggregateTodo, "aggregate_id": id, "aggregate_version": int64(3),
		"event_type": event.TodoCreated, "partition_key": owner, "partition": outbox.PartitionOf(owner), "payload": string(payload), "created_at": now}
	if len(row) != len(outbox.Columns) || len(want) != len(outbox.Columns) {
		t.Fatalf("%d values for %d columns", len(row), len(outbox.Columns))
	}
	for i, col := range outbox.Columns {
		if row[i] != want[col] {
			t.Errorf("%s = %v, want %v", col, row[i], want[col])
		}
	}
}

func TestPartitionOfIsStableAndSpread(t *testing.T) {
	t.Parallel()
	// Pinned values: a change here re-homes every user and breaks per-user order
	// across a deploy.
	// Expected values computed independently (FNV-1a 32 by hand, mod 64).
	for id, want := range map[string]int32{
		"00000000-0000-0000-0000-000000000000": 5,
		"01234567-89ab-cdef-0123-456789abcdef": 5,
		"ffffffff-ffff-ffff-ffff-ffffffffffff": 53,
		"9f1c2d3e-4b5a-6789-0abc-def012345678": 44,
	} {
		if got := outbox.PartitionOf(uuid.MustParse(id)); got != want {
			t.Fatalf("PartitionOf(%s) = %d, want %d", id, got, want)
		}
	}
	seen := map[int32]int{}
	for range 6400 {
		p := outbox.PartitionOf(uuid.New())
		if p < 0 || p >= outbox.Partitions {
			t.Fatalf("partition %d out of range", p)
		}
		seen[p]++
	}
	for p := int32(0); p < outbox.Partitions; p++ {
		if seen[p] < 40 { // expected 100 each; 40 is far in the tail
			t.Fatalf("partition %d got %d of 6400 owners: hash is skewed", p, seen[p])
		}
	}
}
