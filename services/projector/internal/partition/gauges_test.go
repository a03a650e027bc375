package partition

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/metrics"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
	"github.com/outboxtodo/outboxtodo/tools/devstack/natsserver"
)

// TestPartitionGauges: a replica reports the pending and unacknowledged messages of
// the partitions it holds, one series per partition, and drops a partition's series
// once it no longer holds it; the durables of other consumers are never reported.
func TestPartitionGauges(t *testing.T) {
	t.Parallel()
	srv := natsserver.NewTest(t, nil)
	_, js := natsserver.Connect(t, srv.ClientURL())
	ctx := sharedtest.Context(t, 30*time.Second)
	const prefix, partitions = event.DefaultSubjectPrefix, 2
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{event.StreamSubjects(prefix)},
		SubjectTransform: event.PartitionTransform(prefix, partitions)})
	if err != nil {
		t.Fatal(err)
	}
	for _, cc := range []jetstream.ConsumerConfig{
		{Durable: "projector-p0", FilterSubject: event.PartitionFilter(prefix, 0)},
		{Durable: "projector-p1", FilterSubject: event.PartitionFilter(prefix, 1)},
		{Durable: "projector"},
		{Durable: "projector-rebuild"},
	} {
		cc.AckPolicy = jetstream.AckExplicitPolicy
		if _, err := s.CreateOrUpdateConsumer(ctx, cc); err != nil {
			t.Fatal(err)
		}
	}
	owner := uuid.Must(uuid.NewV7())
	busy := fmt.Sprintf("p%d", event.PartitionOf(owner, partitions))
	idle := fmt.Sprintf("p%d", 1-event.PartitionOf(owner, partitions))
	for i := range 3 {
		if _, err := js.Publish(ctx, fmt.Sprintf("%s.todo.%s.%d", prefix, owner, i), []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}

	// The server counts a consumer's pending messages after the PubAck, not before it:
	// wait until both consumers that match the events have counted all three.
	sharedtest.Eventually(t, 10*time.Second, func() (bool, string) {
		for _, name := range []string{"projector-" + busy, "projector"} {
			c, err := s.Consumer(ctx, name)
			if err != nil {
				return false, err.Error()
			}
			info, err := c.Info(ctx)
			if err != nil {
				return false, err.Error()
			}
			if info.NumPending != 3 {
				return false, fmt.Sprintf("%s counts %d pending", name, info.NumPending)
			}
		}
		return true, ""
	})

	m := metrics.New(prometheus.NewRegistry())
	reported := map[string]bool{}
	refresh := func(held ...string) {
		t.Helper()
		units, err := durables(ctx, js, "EVENTS", "projector")
		if err != nil {
			t.Fatal(err)
		}
		setUnitGauges(m, units, held, reported)
	}
	refresh(busy)
	if n := testutil.CollectAndCount(m.PartitionPending); n != 1 {
		t.Fatalf("holding %s: %d pending series, want 1", busy, n)
	}
	if got := testutil.ToFloat64(m.PartitionPending.WithLabelValues(busy)); got != 3 {
		t.Fatalf("pending of %s = %v, want 3", busy, got)
	}

	// The partition moved to another replica; this one took the other partition and
	// the unpartitioned layout's durable.
	refresh(idle, "legacy")
	if n := testutil.CollectAndCount(m.PartitionPending); n != 2 {
		t.Fatalf("holding %s and legacy: %d pending series, want 2", idle, n)
	}
	if n := testutil.CollectAndCount(m.PartitionAckPending); n != 2 {
		t.Fatalf("holding %s and legacy: %d ack pending series, want 2", idle, n)
	}
	if got, legacy := testutil.ToFloat64(m.PartitionPending.WithLabelValues(idle)), testutil.ToFloat64(m.PartitionPending.WithLabelValues("legacy")); got != 0 || legacy != 3 {
		t.Fatalf("pending of %s = %v, of legacy = %v, want 0 and 3", idle, got, legacy)
	}

	// A standby reports none.
	refresh()
	if n := testutil.CollectAndCount(m.PartitionPending) + testutil.CollectAndCount(m.PartitionAckPending); n != 0 {
		t.Fatalf("standby: %d partition series, want none", n)
	}
}
