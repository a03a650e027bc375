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
// Retention: every event carries its aggregate's full state, so the stream is a
// compacted log: the newest MaxMsgsPerSubject messages of each subject (one subject per
// aggregate) are kept, with no age limit unless MaxAge is set. It always holds the
// latest state of every aggregate, and a read model can be rebuilt from it after the
// outbox rows are gone.
package stream

import (
	"context"
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
}

// Config is the JetStream configuration for s.
func (s Spec) Config() jetstream.StreamConfig {
	return jetstream.StreamConfig{
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
}

// Ensure creates the stream or updates it to s, idempotently, so every replica can run
// it at start. Settings the server cannot change in place (storage, for one) fail with
// the server's error.
func Ensure(ctx context.Context, js jetstream.JetStream, s Spec) (jetstream.Stream, error) {
	st, err := js.CreateOrUpdateStream(ctx, s.Config())
	if err != nil {
		return nil, fmt.Errorf("create or update stream %s: %w", s.Name, err)
	}
	return st, nil
}
