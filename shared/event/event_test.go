package event_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxtodo/outboxtodo/shared/event"
)

func newTodoEvent(t *testing.T) event.Envelope {
	t.Helper()
	owner, id := uuid.New(), uuid.New()
	now := time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)
	e, err := event.New(event.TodoCreated, id, owner, 1, now,
		event.TraceContext{TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", RequestID: "req-1"},
		event.TodoData{ID: id, UserID: owner, Title: "buy milk", Priority: "normal", Version: 1, CreatedAt: now, UpdatedAt: now})
	if err != nil {
		t.Fatalf("new event: %v", err)
	}
	return e
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	e := newTodoEvent(t)
	b, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := event.Decode(b)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if got.ID != e.ID || got.Type != e.Type || got.Version != 1 || got.AggregateType != event.AggregateTodo ||
		got.OwnerID != e.OwnerID || !got.OccurredAt.Equal(e.OccurredAt) || got.Trace != e.Trace {
		t.Fatalf("round trip changed the envelope:\n got %+v\nwant %+v", got, e)
	}
	todo, err := got.Todo()
	if err != nil {
		t.Fatalf("todo data: %v", err)
	}
	if todo.Title != "buy milk" || todo.ID != e.AggregateID {
		t.Fatalf("todo data = %+v", todo)
	}
	if _, err := got.User(); !errors.Is(err, event.ErrInvalid) {
		t.Fatalf("User() on a todo event: err = %v, want ErrInvalid", err)
	}
}

func TestStatsRoundTrip(t *testing.T) {
	t.Parallel()
	e := newTodoEvent(t)
	e.Stats = &event.Stats{Open: 2, Completed: 3, Version: 7}
	got, err := event.Decode(mustEncode(t, e))
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if got.Stats == nil || *got.Stats != *e.Stats || got.Stats.Total() != 5 {
		t.Fatalf("stats = %+v, want %+v", got.Stats, e.Stats)
	}
	e.Stats = nil
	if got, err := event.Decode(mustEncode(t, e)); err != nil || got.Stats != nil {
		t.Fatalf("an event without stats decoded as %+v, %v", got.Stats, err)
	}
}

func TestDecodeIgnoresUnknownFields(t *testing.T) {
	t.Parallel()
	e := newTodoEvent(t)
	b, _ := e.Encode()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	m["added_by_a_newer_producer"] = map[string]any{"x": 1}
	b, _ = json.Marshal(m)
	got, err := event.Decode(b)
	if err != nil {
		t.Fatalf("decode with an unknown field: %v", err)
	}
	if got.ID != e.ID {
		t.Fatalf("id = %s, want %s", got.ID, e.ID)
	}
}

func TestDecodeRejects(t *testing.T) {
	t.Parallel()
	valid := newTodoEvent(t)
	mutate := func(f func(m map[string]any)) []byte {
		b, _ := valid.Encode()
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		f(m)
		out, _ := json.Marshal(m)
		return out
	}
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"not json", []byte("{"), event.ErrMalformed},
		{"trailing data", append(mustEncode(t, valid), []byte(" {}")...), event.ErrMalformed},
		{"newer schema version", mutate(func(m map[string]any) { m["schema_version"] = 2 }), event.ErrUnsupportedVersion},
		{"zero schema version", mutate(func(m map[string]any) { m["schema_version"] = 0 }), event.ErrInvalid},
		{"unknown type", mutate(func(m map[string]any) { m["type"] = "todo.exploded" }), event.ErrInvalid},
		{"type of another aggregate", mutate(func(m map[string]any) { m["aggregate_type"] = "user" }), event.ErrInvalid},
		{"missing id", mutate(func(m map[string]any) { delete(m, "id") }), event.ErrInvalid},
		{"bad id", mutate(func(m map[string]any) { m["id"] = "nope" }), event.ErrMalformed},
		{"zero version", mutate(func(m map[string]any) { m["version"] = 0 }), event.ErrInvalid},
		{"missing owner", mutate(func(m map[string]any) { delete(m, "owner_id") }), event.ErrInvalid},
		{"missing data", mutate(func(m map[string]any) { delete(m, "data") }), event.ErrInvalid},
		{"null data", mutate(func(m map[string]any) { m["data"] = nil }), event.ErrInvalid},
		{"missing occurred_at", mutate(func(m map[string]any) { delete(m, "occurred_at") }), event.ErrInvalid},
		{"stats without version", mutate(func(m map[string]any) { m["stats"] = map[string]any{"open": 1} }), event.ErrInvalid},
		{"negative stats", mutate(func(m map[string]any) {
			m["stats"] = map[string]any{"open": -1, "completed": 0, "version": 2}
		}), event.ErrInvalid},
		{"deleted stats that count", mutate(func(m map[string]any) {
			m["stats"] = map[string]any{"open": 1, "completed": 0, "version": 2, "deleted": true}
		}), event.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := event.Decode(tt.in); !errors.Is(err, tt.want) {
				t.Fatalf("Decode(%s) err = %v, want %v", tt.in, err, tt.want)
			}
		})
	}
}

func TestDataMustMatchEnvelope(t *testing.T) {
	t.Parallel()
	e := newTodoEvent(t)
	e.Version = 2 // the data says version 1
	if _, err := e.Todo(); !errors.Is(err, event.ErrInvalid) {
		t.Fatalf("Todo() with mismatched version: err = %v, want ErrInvalid", err)
	}
}

func TestTombstone(t *testing.T) {
	t.Parallel()
	owner, id := uuid.New(), uuid.New()
	at := time.Now()
	e, err := event.New(event.TodoDeleted, id, owner, 4, at, event.TraceContext{},
		event.Tombstone{ID: id, OwnerID: owner, Version: 4, DeletedAt: at})
	if err != nil {
		t.Fatal(err)
	}
	ts, err := e.Tombstone()
	if err != nil {
		t.Fatalf("tombstone: %v", err)
	}
	if ts.Version != 4 || !event.IsDelete(e.Type) {
		t.Fatalf("tombstone = %+v", ts)
	}
	if _, err := e.Todo(); !errors.Is(err, event.ErrInvalid) {
		t.Fatalf("Todo() on a delete: err = %v, want ErrInvalid", err)
	}
}

func TestSubjects(t *testing.T) {
	t.Parallel()
	e := newTodoEvent(t)
	s := event.Subject(event.DefaultSubjectPrefix, e)
	want := "todo.events.todo." + e.OwnerID.String() + "." + e.AggregateID.String()
	if s != want {
		t.Fatalf("subject = %q, want %q", s, want)
	}
	for _, filter := range []string{
		event.StreamSubjects(event.DefaultSubjectPrefix),
		event.OwnerFilter(event.DefaultSubjectPrefix, e.OwnerID),
		// One aggregate's events, as Subject's comment promises.
		event.DefaultSubjectPrefix + "." + event.AggregateTodo + ".*." + e.AggregateID.String(),
	} {
		if !subjectMatches(filter, s) {
			t.Errorf("filter %q does not select %q", filter, s)
		}
	}
	if subjectMatches(event.OwnerFilter(event.DefaultSubjectPrefix, uuid.New()), s) {
		t.Error("another owner's filter selects the event")
	}
	for p, ok := range map[string]bool{"todo.events": true, "a": true, "": false, "a..b": false, "a.*": false, "a.>": false, "a b": false} {
		if event.ValidSubjectPrefix(p) != ok {
			t.Errorf("ValidSubjectPrefix(%q) = %v, want %v", p, !ok, ok)
		}
	}
}

// subjectMatches implements NATS wildcard matching for the test.
func subjectMatches(filter, subject string) bool {
	f, s := strings.Split(filter, "."), strings.Split(subject, ".")
	for i, tok := range f {
		if tok == ">" {
			return len(s) > i
		}
		if i >= len(s) || (tok != "*" && tok != s[i]) {
			return false
		}
	}
	return len(f) == len(s)
}

func mustEncode(t *testing.T, e event.Envelope) []byte {
	t.Helper()
	b, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func FuzzDecode(f *testing.F) {
	owner, id := uuid.New(), uuid.New()
	now := time.Now()
	e, _ := event.New(event.TodoCreated, id, owner, 1, now, event.TraceContext{},
		event.TodoData{ID: id, UserID: owner, Title: "t", Priority: "low", Version: 1, CreatedAt: now, UpdatedAt: now})
	b, _ := e.Encode()
	f.Add(b)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"schema_version":2}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := event.Decode(in)
		if err != nil {
			return
		}
		// Whatever decodes must survive a round trip unchanged.
		out, err := got.Encode()
		if err != nil {
			t.Fatalf("encode decoded event: %v", err)
		}
		again, err := event.Decode(out)
		if err != nil {
			t.Fatalf("decode re-encoded event: %v", err)
		}
		if again.ID != got.ID || again.Version != got.Version || again.Type != got.Type {
			t.Fatalf("round trip changed the event")
		}
	})
}

func TestPartitionLayout(t *testing.T) {
	t.Parallel()
	const prefix = event.DefaultSubjectPrefix
	for _, n := range []int{1, 16, 1024} {
		cfg := jetstream.StreamConfig{SubjectTransform: event.PartitionTransform(prefix, n)}
		if got := event.Partitions(cfg, prefix); got != n {
			t.Errorf("Partitions(PartitionTransform(%d)) = %d", n, got)
		}
		if got := event.Partitions(cfg, "other.prefix"); got != 0 {
			t.Errorf("Partitions with another prefix = %d, want 0", got)
		}
	}
	if got := event.Partitions(jetstream.StreamConfig{}, prefix); got != 0 {
		t.Errorf("Partitions of an unpartitioned stream = %d, want 0", got)
	}
	e := newTodoEvent(t)
	p := event.PartitionOf(e.OwnerID, 16)
	stored := fmt.Sprintf("%d.%s", p, event.Subject(prefix, e))
	if !subjectMatches(event.PartitionFilter(prefix, p), stored) || !subjectMatches(event.PartitionedSubjects(prefix), stored) {
		t.Errorf("partition filters do not select %q", stored)
	}
	if subjectMatches(event.PartitionFilter(prefix, (p+1)%16), stored) {
		t.Errorf("another partition's filter selects %q", stored)
	}
	if event.ValidPartitions(0) || !event.ValidPartitions(16) || event.ValidPartitions(1025) {
		t.Error("ValidPartitions bounds")
	}
}

func TestConsumerNames(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]bool{"projector": true, event.PartitionDurable("projector", 12): true, "projector-p": false,
		"projector-p1x": false, "projector-rebuild": false, "other-p1": false} {
		if event.IsConsumerOf(name, "projector") != want {
			t.Errorf("IsConsumerOf(%q) = %v, want %v", name, !want, want)
		}
	}
	for name, want := range map[string]string{"projector": event.LegacyUnit, event.PartitionDurable("projector", 12): "p12",
		"projector-p": "", "projector-rebuild": "", "other-p1": ""} {
		if got := event.ConsumerUnit(name, "projector"); got != want {
			t.Errorf("ConsumerUnit(%q) = %q, want %q", name, got, want)
		}
	}
}
