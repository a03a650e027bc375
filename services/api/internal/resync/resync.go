// Package resync repairs the read model through the normal path: it re-emits events
// into the outbox for chosen aggregates (or all), which the publisher relays and the
// projector applies like any other event.
//
// A live aggregate gets a new outbox row (a fresh event id, so the stream's duplicate
// window cannot drop it) with its current state and its CURRENT version: the version
// guard makes it a no-op where the read model is already right, and a repair where a
// document is missing or stale. The outbox allows one row per aggregate version, so a
// published row of that version is replaced; an unpublished one is left alone, since
// the publisher is about to deliver that very state.
//
// An aggregate the read model shows but the source no longer has (a lost delete) gets a
// tombstone event that outranks both the stale document and every event the outbox
// still holds for the aggregate: the read model's version plus one, or the newest
// outbox version if that is higher. Within RETENTION that is the delete's own version,
// so its published row is replaced like a live aggregate's, and an unpublished one
// skips the aggregate. The source never issues versions for a deleted aggregate again.
package resync

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/outboxtodo/outboxtodo/services/api/internal/postgres"
	"github.com/outboxtodo/outboxtodo/services/api/internal/todos"
	"github.com/outboxtodo/outboxtodo/services/api/internal/users"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
)

// Selection names the aggregates to re-emit; All re-emits every aggregate of the
// source and a tombstone for every live read-model document the source lacks.
type Selection struct {
	All   bool
	Users []uuid.UUID
	Todos []uuid.UUID
}

// Report counts what Run did.
type Report struct {
	Emitted    int // rows with current state
	Tombstones int // deletes for documents the source lacks
	Pending    int // skipped: an unpublished row of the same version is in the outbox
}

// batchSize bounds the aggregates re-emitted per transaction.
const batchSize = 200

// Run re-emits the selection. readModel may be nil when the selection names only
// aggregates that exist in the source.
func Run(ctx context.Context, store *postgres.Store, readModel *mongo.Database, sel Selection) (Report, error) {
	var rep Report
	userIDs, todoIDs := sel.Users, sel.Todos
	if sel.All {
		var err error
		if userIDs, err = store.IDs(ctx, event.AggregateUser); err != nil {
			return rep, err
		}
		if todoIDs, err = store.IDs(ctx, event.AggregateTodo); err != nil {
			return rep, err
		}
		if readModel != nil {
			extraUsers, err := liveIDs(ctx, readModel.Collection(readmodel.CollUsers))
			if err != nil {
				return rep, err
			}
			extraTodos, err := liveIDs(ctx, readModel.Collection(readmodel.CollTodos))
			if err != nil {
				return rep, err
			}
			userIDs, todoIDs = union(userIDs, extraUsers), union(todoIDs, extraTodos)
		}
	}
	for i := 0; i < len(userIDs); i += batchSize {
		if err := emitBatch(ctx, store, readModel, event.AggregateUser, userIDs[i:min(i+batchSize, len(userIDs))], &rep); err != nil {
			return rep, err
		}
	}
	for i := 0; i < len(todoIDs); i += batchSize {
		if err := emitBatch(ctx, store, readModel, event.AggregateTodo, todoIDs[i:min(i+batchSize, len(todoIDs))], &rep); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

func emitBatch(ctx context.Context, store *postgres.Store, readModel *mongo.Database, aggType string, batch []uuid.UUID, rep *Report) error {
	var local Report
	err := store.InTx(ctx, func(tx *postgres.Tx) error {
		local = Report{}
		var events []event.Envelope
		for _, id := range batch {
			e, live, err := current(ctx, tx, aggType, id)
			if err != nil {
				return err
			}
			if !live {
				if readModel == nil {
					continue
				}
				var found bool
				if e, found, err = tombstone(ctx, tx, readModel, aggType, id); err != nil {
					return err
				}
				if !found {
					continue
				}
			}
			pending, err := tx.TakeVersion(ctx, e)
			if err != nil {
				return err
			}
			switch {
			case pending:
				local.Pending++
				continue
			case live:
				local.Emitted++
			default:
				local.Tombstones++
			}
			events = append(events, e)
		}
		return tx.Emit(ctx, events...)
	})
	if err != nil {
		return fmt.Errorf("resync %d %ss: %w", len(batch), aggType, err)
	}
	rep.Emitted += local.Emitted
	rep.Tombstones += local.Tombstones
	rep.Pending += local.Pending
	return nil
}

var trace = event.TraceContext{RequestID: "resync"}

// current builds the event of an aggregate's current state, locking its row so that
// the version read is the one inserted.
func current(ctx context.Context, tx *postgres.Tx, aggType string, id uuid.UUID) (event.Envelope, bool, error) {
	typ, owner, version, data, err := state(ctx, tx, aggType, id)
	if errors.Is(err, users.ErrNotFound) || errors.Is(err, todos.ErrNotFound) {
		return event.Envelope{}, false, nil
	}
	if err != nil {
		return event.Envelope{}, false, err
	}
	e, err := event.New(typ, id, owner, version, time.Now(), trace, data)
	return e, err == nil, err
}

// state reads an aggregate's current state, its row locked, as the event type, owner,
// version and data of its update.
func state(ctx context.Context, tx *postgres.Tx, aggType string, id uuid.UUID) (string, uuid.UUID, int64, any, error) {
	if aggType == event.AggregateUser {
		u, err := tx.LockUser(ctx, id)
		return event.UserUpdated, u.ID, u.Version, u.Data(), err
	}
	t, err := tx.LockTodo(ctx, id)
	return event.TodoUpdated, t.UserID, t.Version, t.Data(), err
}

// tombstone builds a delete for a live read-model document the source lacks, at the
// version the package comment gives.
func tombstone(ctx context.Context, tx *postgres.Tx, readModel *mongo.Database, aggType string, id uuid.UUID) (event.Envelope, bool, error) {
	coll, typ := readmodel.CollUsers, event.UserDeleted
	if aggType == event.AggregateTodo {
		coll, typ = readmodel.CollTodos, event.TodoDeleted
	}
	var doc struct {
		Version int64  `bson:"version"`
		UserID  string `bson:"user_id"`
	}
	err := readModel.Collection(coll).FindOne(ctx, bson.D{{Key: "_id", Value: id.String()}, readmodel.NotDeleted}).Decode(&doc)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return event.Envelope{}, false, nil
	}
	if err != nil {
		return event.Envelope{}, false, fmt.Errorf("read %s %s from the read model: %w", aggType, id, err)
	}
	owner := id
	if aggType == event.AggregateTodo {
		if owner, err = uuid.Parse(doc.UserID); err != nil {
			return event.Envelope{}, false, fmt.Errorf("todo %s has owner %q: %w", id, doc.UserID, err)
		}
	}
	newest, err := tx.NewestVersion(ctx, aggType, id)
	if err != nil {
		return event.Envelope{}, false, err
	}
	now := time.Now()
	v := max(doc.Version+1, newest)
	e, err := event.NewTombstone(typ, id, owner, v, now, trace)
	return e, err == nil, err
}

func liveIDs(ctx context.Context, coll *mongo.Collection) ([]uuid.UUID, error) {
	cur, err := coll.Find(ctx, bson.D{readmodel.NotDeleted})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", coll.Name(), err)
	}
	var docs []struct {
		ID string `bson:"_id"`
	}
	if err := cur.All(ctx, &docs); err != nil {
		return nil, fmt.Errorf("list %s: %w", coll.Name(), err)
	}
	out := make([]uuid.UUID, 0, len(docs))
	for _, d := range docs {
		id, err := uuid.Parse(d.ID)
		if err != nil {
			return nil, fmt.Errorf("%s has id %q: %w", coll.Name(), d.ID, err)
		}
		out = append(out, id)
	}
	return out, nil
}

func union(a, b []uuid.UUID) []uuid.UUID {
	seen := make(map[uuid.UUID]bool, len(a)+len(b))
	out := make([]uuid.UUID, 0, len(a)+len(b))
	for _, id := range slices.Concat(a, b) {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}
