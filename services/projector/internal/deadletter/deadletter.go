// Package deadletter keeps the messages the projector gave up on, in the control
// database's dead_letters collection, and applies them again when an operator asks
// (redrive).
//
// A dead letter holds the raw message as it sat in the stream (subject, headers, body),
// its stream sequence and the error, so that nothing about it is lost when the message
// is terminated in JetStream.
//
// Redrive applies the stored body straight to the read model with the projector's own
// code, rather than publishing it to the stream again: the stream keeps only the newest
// messages of each aggregate's subject, so a republished old event could push the
// aggregate's newest event out of the stream and leave a later rebuild with stale
// state. The version guard makes a redriven event harmless if a newer one was applied
// meanwhile, and the operator sees at once whether it applied.
package deadletter

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/outboxtodo/outboxtodo/shared/readmodel"
)

// Store reads and writes dead letters.
type Store struct {
	coll *mongo.Collection
	now  func() time.Time
}

// New stores dead letters in the control database.
func New(control *mongo.Database) *Store {
	return &Store{coll: control.Collection(readmodel.CollDeadLetters), now: time.Now}
}

// ID is the dead letter id of a message.
func ID(stream string, seq uint64) string { return fmt.Sprintf("%s:%d", stream, seq) }

// Add records msg with the reason it failed. The same message failing again (a crash
// between Add and Term, a rebuild meeting it in the stream) updates the record and
// makes it pending again, since it is missing from the read model once more.
func (s *Store) Add(ctx context.Context, msg jetstream.Msg, cause error) error {
	md, err := msg.Metadata()
	if err != nil {
		return fmt.Errorf("dead letter: metadata: %w", err)
	}
	dl := readmodel.DeadLetter{
		ID:         ID(md.Stream, md.Sequence.Stream),
		Stream:     md.Stream,
		StreamSeq:  md.Sequence.Stream,
		Subject:    msg.Subject(),
		Headers:    msg.Headers(),
		Data:       msg.Data(),
		Error:      cause.Error(),
		Deliveries: md.NumDelivered,
		DeadAt:     s.now().UTC(),
	}
	update := bson.D{
		{Key: "$set", Value: bson.D{
			{Key: "stream", Value: dl.Stream}, {Key: "stream_seq", Value: int64(dl.StreamSeq)},
			{Key: "subject", Value: dl.Subject}, {Key: "headers", Value: dl.Headers}, {Key: "data", Value: dl.Data},
			{Key: "error", Value: dl.Error}, {Key: "deliveries", Value: int64(dl.Deliveries)}, {Key: "dead_at", Value: dl.DeadAt},
		}},
		{Key: "$unset", Value: bson.D{{Key: "redriven_at", Value: ""}}},
	}
	if _, err := s.coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: dl.ID}}, update, options.UpdateOne().SetUpsert(true)); err != nil {
		return fmt.Errorf("dead letter %s: %w", dl.ID, err)
	}
	return nil
}

// List returns dead letters, oldest first: only pending ones unless all is set.
func (s *Store) List(ctx context.Context, all bool) ([]readmodel.DeadLetter, error) {
	filter := readmodel.PendingDeadLettersFilter
	if all {
		filter = bson.D{}
	}
	cur, err := s.coll.Find(ctx, filter, options.Find().SetSort(bson.D{{Key: "dead_at", Value: 1}, {Key: "_id", Value: 1}}))
	if err != nil {
		return nil, fmt.Errorf("list dead letters: %w", err)
	}
	var out []readmodel.DeadLetter
	if err := cur.All(ctx, &out); err != nil {
		return nil, fmt.Errorf("list dead letters: %w", err)
	}
	return out, nil
}

// Count counts pending dead letters.
func (s *Store) Count(ctx context.Context) (int64, error) {
	n, err := s.coll.CountDocuments(ctx, readmodel.PendingDeadLettersFilter)
	if err != nil {
		return 0, fmt.Errorf("count dead letters: %w", err)
	}
	return n, nil
}

// ErrUnknown is returned by Redrive for an id that names no dead letter.
var ErrUnknown = errors.New("no such dead letter")

// ApplyFunc applies the body of a dead letter to the read model.
type ApplyFunc func(ctx context.Context, data []byte) error

// Outcome is the result of redriving one dead letter.
type Outcome struct {
	ID  string
	Err error // nil: applied and marked redriven
}

// Redrive applies the named dead letters (every pending one when ids is empty) with
// apply, one at a time, and marks those that applied as redriven. One that fails again
// stays pending with its Outcome's error; the others go on. The error return is for
// failures to read or mark the dead letters.
func (s *Store) Redrive(ctx context.Context, apply ApplyFunc, ids []string) ([]Outcome, error) {
	var dls []readmodel.DeadLetter
	if len(ids) == 0 {
		var err error
		if dls, err = s.List(ctx, false); err != nil {
			return nil, err
		}
	}
	for _, id := range ids {
		var dl readmodel.DeadLetter
		err := s.coll.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&dl)
		if errors.Is(err, mongo.ErrNoDocuments) {
			return nil, fmt.Errorf("redrive %s: %w", id, ErrUnknown)
		}
		if err != nil {
			return nil, fmt.Errorf("redrive %s: %w", id, err)
		}
		dls = append(dls, dl)
	}
	var out []Outcome
	for _, dl := range dls {
		if err := apply(ctx, dl.Data); err != nil {
			out = append(out, Outcome{ID: dl.ID, Err: err})
			continue
		}
		_, err := s.coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: dl.ID}}, bson.D{
			{Key: "$set", Value: bson.D{{Key: "redriven_at", Value: s.now().UTC()}}},
			{Key: "$inc", Value: bson.D{{Key: "redrive_count", Value: 1}}},
		})
		if err != nil {
			return out, fmt.Errorf("redrive %s: mark redriven: %w", dl.ID, err)
		}
		out = append(out, Outcome{ID: dl.ID})
	}
	return out, nil
}

// DeleteOwner deletes every dead letter of owner's events, pending or redriven, and
// returns how many: they hold whole messages, personal data included (package erasure).
func (s *Store) DeleteOwner(ctx context.Context, owner uuid.UUID) (int, error) {
	all, err := s.List(ctx, true)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, dl := range all {
		// <partition>.<prefix>.<type>.<owner>.<id>, or the same without the partition.
		tokens := strings.Split(dl.Subject, ".")
		if len(tokens) < 2 || tokens[len(tokens)-2] != owner.String() {
			continue
		}
		if _, err := s.coll.DeleteOne(ctx, bson.D{{Key: "_id", Value: dl.ID}}); err != nil {
			return n, fmt.Errorf("delete dead letter %s: %w", dl.ID, err)
		}
		n++
	}
	return n, nil
}
