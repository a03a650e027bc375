// Package stream provisions the JetStream stream the publisher writes to.
//
// Subjects are <prefix>.<aggregate_type>.<owner_id>.<aggregate_id> (see shared/event),
// so the nats CLI selects with wildcards, for example with the default prefix:
//
//	nats stream view TODO_EVENTS --subject 'todo.events.todo.*.<todo_id>'   # one todo
//	nats stream view TODO_EVENTS --subject 'todo.events.*.<user_id>.*'      # one user's events
//	nats stream view TODO_EVENTS --subject 'todo.events.user.>'             # every user event
//	nats stream subjects TODO_EVENTS 'todo.events.todo.>'                   # aggregates and counts
//
// The stream is partitioned by owner (event.PartitionTransform): it stores each subject
// behind its owner's partition number, <partition>.<prefix>.<type>.<owner>.<id>, which
// is what the projector's replicas share the work by. Publishers keep publishing the
// plain subject. Adding the transform to a stream of an earlier release changes only
// the subjects of messages stored from then on; the projector drains the older ones
// first (see the projector's package partition). The partition count of a stream
// cannot be changed in place: an owner's events would then be split across two
// partitions, consumed by two replicas at once.
//
// Retention: every event carries its aggregate's full state, so the stream is a
// compacted log: the newest MaxMsgsPerSubject messages of each subject (one subject per
// aggregate) are kept, with no age limit unless MaxAge is set. It always holds the
// latest state of every aggregate, and a read model can be rebuilt from it after the
// outbox rows are gone.
package stream

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxtodo/outboxtodo/shared/event"
)

// Spec is what the publisher needs from the stream.
type Spec struct {
	Name              string
	SubjectPrefix     string
	Replicas          int
	DuplicateWindow   time.Duration
	MaxAge            time.Duration // 0: no limit
	MaxMsgsPerSubject int64         // -1: no limit
	// Partitions is the number of owner partitions; 0 keeps the unpartitioned layout
	// of earlier releases (tests of the publisher alone use it).
	Partitions int
}

// Config is the JetStream configuration for s.
func (s Spec) Config() jetstream.StreamConfig {
	cfg := jetstream.StreamConfig{
		Name:              s.Name,
		Description:       "Outbox events of the todo service, one subject per aggregate",
		Subjects:          []string{event.StreamSubjects(s.SubjectPrefix)},
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardOld,
		Storage:           jetstream.FileStorage,
		Replicas:          s.Replicas,
		Duplicates:        s.DuplicateWindow,
		MaxAge:            s.MaxAge,
		MaxMsgsPerSubject: s.MaxMsgsPerSubject,
		MaxMsgs:           -1,
		MaxBytes:          -1,
	}
	if s.Partitions > 0 {
		cfg.SubjectTransform = event.PartitionTransform(s.SubjectPrefix, s.Partitions)
	}
	return cfg
}

// ErrRepartition is the error of Ensure on a stream partitioned otherwise.
var ErrRepartition = errors.New("the stream's partition count cannot be changed in place")

// Ensure creates the stream or updates it to s, idempotently, so every replica can run
// it at start. Settings the server cannot change in place (storage, for one) fail with
// the server's error.
func Ensure(ctx context.Context, js jetstream.JetStream, s Spec) (jetstream.Stream, error) {
	if st, err := js.Stream(ctx, s.Name); err == nil {
		if have := event.Partitions(st.CachedInfo().Config, s.SubjectPrefix); have != 0 && have != s.Partitions {
			return nil, fmt.Errorf("stream %s has %d partitions, configured %d: %w", s.Name, have, s.Partitions, ErrRepartition)
		}
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("stream %s: %w", s.Name, err)
	}
	st, err := js.CreateOrUpdateStream(ctx, s.Config())
	if err != nil {
		return nil, fmt.Errorf("create or update stream %s: %w", s.Name, err)
	}
	return st, nil
}
