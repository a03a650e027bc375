package stream_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outboxtodo/outboxtodo/services/publisher/internal/stream"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
	"github.com/outboxtodo/outboxtodo/tools/devstack/natsserver"
)

// TestEnsurePartitionsAnExistingStream upgrades a stream of the unpartitioned layout:
// the messages stored before keep their subjects, those stored after carry the
// partition event.PartitionOf computes, and the partition count cannot change later.
func TestEnsurePartitionsAnExistingStream(t *testing.T) {
	t.Parallel()
	_, js := natsserver.Connect(t, natsserver.NewTest(t, nil).ClientURL())
	ctx := sharedtest.Context(t, 30*time.Second)
	const prefix = event.DefaultSubjectPrefix
	spec := stream.Spec{Name: "EVENTS", SubjectPrefix: prefix, Replicas: 1, DuplicateWindow: time.Minute, MaxMsgsPerSubject: -1}
	if _, err := stream.Ensure(ctx, js, spec); err != nil {
		t.Fatal(err)
	}
	owner := uuid.New()
	plain := fmt.Sprintf("%s.todo.%s.%s", prefix, owner, uuid.New())
	if _, err := js.Publish(ctx, plain, []byte("before")); err != nil {
		t.Fatal(err)
	}
	spec.Partitions = 16
	st, err := stream.Ensure(ctx, js, spec)
	if err != nil {
		t.Fatal(err)
	}
	if got := event.Partitions(st.CachedInfo().Config, prefix); got != 16 {
		t.Fatalf("partitions of the updated stream = %d, want 16", got)
	}
	if _, err := js.Publish(ctx, plain, []byte("after")); err != nil {
		t.Fatal(err)
	}
	for seq, want := range map[uint64]string{1: plain, 2: fmt.Sprintf("%d.%s", event.PartitionOf(owner, 16), plain)} {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if m.Subject != want {
			t.Errorf("message %d stored as %q, want %q", seq, m.Subject, want)
		}
	}
	spec.Partitions = 8
	if _, err := stream.Ensure(ctx, js, spec); !errors.Is(err, stream.ErrRepartition) {
		t.Fatalf("repartition: err = %v, want ErrRepartition", err)
	}
}
