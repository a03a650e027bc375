// Package project applies events to the MongoDB read model: version-guarded upserts
// of users and todos, tombstones for deletes, per-user stats recomputed from state and
// the projection watermark.
//
// Every write is idempotent and order-insensitive, so the consumer may deliver an event
// any number of times, in any order, from any number of replicas:
//
//   - A document is written with the filter {_id, version < v} and upsert. When the
//     stored document is as new or newer the filter matches nothing and the upsert's
//     insert hits the unique _id: MongoDB answers E11000, which means "stale, skip".
//   - A delete writes a tombstone {deleted: true, version} through the same guard, so a
//     late older upsert meets a newer version and is skipped instead of resurrecting.
//   - Stats are never incremented: after every event the owner's stats are recounted
//     from the todos collection and written under the guard described on
//     readmodel.Stats, so the recount that saw the newest state wins.
//
// Tombstones are never purged in place. The rule for removing one safely: no message
// older than the delete may still reach any consumer of this read model, which takes
// every consumer's ack floor past the delete's stream sequence, no pending dead letter
// or unpublished outbox row of the aggregate, and the publisher's republish window
// passed; and since a todo tombstone's version is part of its owner's stats guard (see
// readmodel.Stats), removing it would also need that guard rebased. The stream keeps the
// delete as its subject's newest message, so a rebuild recreates the tombstones anyway.
// One small document per deleted aggregate is the price of not having to prove all of
// that at run time.
//
// The writes are single-document operations, sent concurrently (bounded) rather than in
// bulks: the FerretDB stand-in hangs on bulk updates matching 50 or more documents and
// ignores ordered=false, and single writes work unchanged on MongoDB.
package project

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
)

// Outcome is what applying one event did.
type Outcome int

// Outcomes of Apply.
const (
	Applied Outcome = iota + 1 // the document now holds this event's state
	Stale                      // the stored document was as new or newer: nothing written
)

func (o Outcome) String() string {
	switch o {
	case Applied:
		return "applied"
	case Stale:
		return "stale"
	}
	return "unknown"
}

// Result is the fate of one event of a batch. Err is nil when the event and its owner's
// stats are written; the event may then be acknowledged.
type Result struct {
	Outcome Outcome
	Err     error
}

// Decode parses an event and checks its payload: an event that fails here can never
// apply, however often it is delivered.
func Decode(b []byte) (event.Envelope, error) {
	e, err := event.Decode(b)
	if err != nil {
		return e, err
	}
	switch {
	case event.IsDelete(e.Type):
		_, err = e.Tombstone()
	case e.AggregateType == event.AggregateUser:
		_, err = e.User()
	default:
		_, err = e.Todo()
	}
	return e, err
}

// Projector writes events into one read-model database.
type Projector struct {
	db          *mongo.Database
	concurrency int
	now         func() time.Time
}

// New writes into db with at most concurrency writes in flight (at least 1).
func New(db *mongo.Database, concurrency int) *Projector {
	return &Projector{db: db, concurrency: max(1, concurrency), now: time.Now}
}

// Apply writes a batch of decoded events and recounts the stats of every owner they
// touch. Events of one aggregate are applied one after another in the order given
// (stream order); different aggregates concurrently. It returns one result per event,
// in the order given. ctx bounds the whole batch.
func (p *Projector) Apply(ctx context.Context, events []event.Envelope) []Result {
	results := make([]Result, len(events))
	groups := make(map[string][]int)
	var order []string
	for i, e := range events {
		k := e.AggregateType + "/" + e.AggregateID.String()
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], i)
	}
	p.each(len(order), func(g int) {
		for _, i := range groups[order[g]] {
			o, err := p.applyOne(ctx, events[i])
			results[i] = Result{Outcome: o, Err: err}
		}
	})

	// Recount each owner once, after all of the batch's writes for that owner. A stale
	// event still triggers it: its write may have landed in an earlier delivery whose
	// recount failed.
	owners := make(map[string][]int)
	var ownerOrder []string
	for i, e := range events {
		o := e.OwnerID.String()
		if _, ok := owners[o]; !ok {
			ownerOrder = append(ownerOrder, o)
		}
		owners[o] = append(owners[o], i)
	}
	p.each(len(ownerOrder), func(k int) {
		owner := ownerOrder[k]
		if err := p.RecountStats(ctx, owner); err != nil {
			for _, i := range owners[owner] {
				if results[i].Err == nil {
					results[i].Err = err
				}
			}
		}
	})
	return results
}

// ApplyRaw decodes one message body and applies it, stats included: the redrive of a
// dead letter.
func (p *Projector) ApplyRaw(ctx context.Context, body []byte) error {
	e, err := Decode(body)
	if err != nil {
		return err
	}
	return p.Apply(ctx, []event.Envelope{e})[0].Err
}

// each runs fn(0..n-1) with at most p.concurrency calls at a time and waits for all.
func (p *Projector) each(n int, fn func(i int)) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, p.concurrency)
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			fn(i)
		})
	}
	wg.Wait()
}

func (p *Projector) applyOne(ctx context.Context, e event.Envelope) (Outcome, error) {
	var (
		coll = p.db.Collection(readmodel.CollUsers)
		set  any
		uns  bson.D
	)
	if e.AggregateType == event.AggregateTodo {
		coll = p.db.Collection(readmodel.CollTodos)
	}
	switch {
	case event.IsDelete(e.Type):
		ts, err := e.Tombstone()
		if err != nil {
			return 0, err
		}
		deletedAt := ts.DeletedAt.UTC()
		s := bson.D{
			{Key: "version", Value: e.Version},
			{Key: "deleted", Value: true},
			{Key: "deleted_at", Value: deletedAt},
			{Key: "projected_at", Value: p.now().UTC()},
		}
		if e.AggregateType == event.AggregateTodo {
			s = append(s, bson.E{Key: "user_id", Value: e.OwnerID.String()}, bson.E{Key: "completed", Value: false})
			uns = unset("title", "notes", "completed_at", "due", "priority", "created_at", "updated_at")
		} else {
			uns = unset("email", "display_name", "created_at", "updated_at")
		}
		set = s
	case e.AggregateType == event.AggregateUser:
		u, err := e.User()
		if err != nil {
			return 0, err
		}
		doc := UserDoc(u)
		doc.ProjectedAt = p.now().UTC()
		set = doc
		uns = unset("deleted", "deleted_at")
	default:
		t, err := e.Todo()
		if err != nil {
			return 0, err
		}
		doc := TodoDoc(t)
		doc.ProjectedAt = p.now().UTC()
		set = doc
		uns = unset("deleted", "deleted_at")
	}
	doc, err := withoutID(set)
	if err != nil {
		return 0, err
	}
	update := bson.D{{Key: "$set", Value: doc}}
	if len(uns) > 0 {
		update = append(update, bson.E{Key: "$unset", Value: uns})
	}
	return guardedUpsert(ctx, coll, e.AggregateID.String(), "version", e.Version, update)
}

// guardedUpsert writes update to the document id unless it already holds guard >= v.
func guardedUpsert(ctx context.Context, coll *mongo.Collection, id string, guard string, v int64, update bson.D) (Outcome, error) {
	filter := bson.D{{Key: "_id", Value: id}, {Key: guard, Value: bson.D{{Key: "$lt", Value: v}}}}
	_, err := coll.UpdateOne(ctx, filter, update, options.UpdateOne().SetUpsert(true))
	switch {
	case err == nil:
		return Applied, nil
	case mongo.IsDuplicateKeyError(err):
		return Stale, nil
	}
	return 0, fmt.Errorf("upsert %s %s %s %d: %w", coll.Name(), id, guard, v, err)
}

func unset(fields ...string) bson.D {
	d := make(bson.D, len(fields))
	for i, f := range fields {
		d[i] = bson.E{Key: f, Value: ""}
	}
	return d
}

// withoutID marshals a document for $set, dropping _id (immutable, and in the filter).
func withoutID(v any) (bson.D, error) {
	if d, ok := v.(bson.D); ok {
		return d, nil
	}
	raw, err := bson.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("marshal document: %w", err)
	}
	var d bson.D
	if err := bson.Unmarshal(raw, &d); err != nil {
		return nil, fmt.Errorf("unmarshal document: %w", err)
	}
	out := d[:0]
	for _, e := range d {
		if e.Key != "_id" {
			out = append(out, e)
		}
	}
	return out, nil
}

// UserDoc is the read-model document of a user's state.
func UserDoc(u event.UserData) readmodel.User {
	return readmodel.User{
		ID:          u.ID.String(),
		Email:       u.Email,
		DisplayName: u.DisplayName,
		Version:     u.Version,
		CreatedAt:   u.CreatedAt.UTC(),
		UpdatedAt:   u.UpdatedAt.UTC(),
	}
}

// TodoDoc is the read-model document of a todo's state.
func TodoDoc(t event.TodoData) readmodel.Todo {
	return readmodel.Todo{
		ID:          t.ID.String(),
		UserID:      t.UserID.String(),
		Title:       t.Title,
		Notes:       t.Notes,
		Completed:   t.Completed,
		CompletedAt: utc(t.CompletedAt),
		Due:         utc(t.Due),
		Priority:    t.Priority,
		Version:     t.Version,
		CreatedAt:   t.CreatedAt.UTC(),
		UpdatedAt:   t.UpdatedAt.UTC(),
	}
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// RecountStats recounts a user's stats from the todos collection and writes them under
// the source-version guard (see readmodel.Stats). Safe to call at any time, from any
// replica.
func (p *Projector) RecountStats(ctx context.Context, owner string) error {
	var user readmodel.User
	err := p.db.Collection(readmodel.CollUsers).FindOne(ctx, bson.D{{Key: "_id", Value: owner}},
		options.FindOne().SetProjection(bson.D{{Key: "version", Value: 1}, {Key: "deleted", Value: 1}})).Decode(&user)
	if err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
		return fmt.Errorf("read user %s for stats: %w", owner, err)
	}
	cur, err := p.db.Collection(readmodel.CollTodos).Find(ctx, bson.D{{Key: "user_id", Value: owner}},
		options.Find().SetProjection(bson.D{{Key: "version", Value: 1}, {Key: "completed", Value: 1}, {Key: "deleted", Value: 1}}))
	if err != nil {
		return fmt.Errorf("read todos of %s for stats: %w", owner, err)
	}
	var todos []readmodel.Todo
	if err := cur.All(ctx, &todos); err != nil {
		return fmt.Errorf("read todos of %s for stats: %w", owner, err)
	}
	st := readmodel.Stats{UserID: owner, SourceVersion: user.Version, UpdatedAt: p.now().UTC(), Deleted: user.Deleted}
	for _, t := range todos {
		st.SourceVersion += t.Version
		if t.Deleted {
			continue
		}
		st.Total++
		if t.Completed {
			st.Completed++
		} else {
			st.Open++
		}
	}
	if st.SourceVersion == 0 {
		return nil // nothing of this user is applied yet
	}
	doc, err := withoutID(st)
	if err != nil {
		return err
	}
	update := bson.D{{Key: "$set", Value: doc}}
	if !st.Deleted {
		update = append(update, bson.E{Key: "$unset", Value: unset("deleted")})
	}
	if _, err := guardedUpsert(ctx, p.db.Collection(readmodel.CollStats), owner, "source_version", st.SourceVersion, update); err != nil {
		return fmt.Errorf("write stats of %s: %w", owner, err)
	}
	return nil
}

// AdvanceWatermark records that the event at seq, committed at occurredAt, is applied.
// The watermark only moves forward (same guard as the documents).
func (p *Projector) AdvanceWatermark(ctx context.Context, seq uint64, occurredAt time.Time) error {
	update := bson.D{{Key: "$set", Value: bson.D{
		{Key: "stream_seq", Value: int64(seq)},
		{Key: "applied_at", Value: p.now().UTC()},
		{Key: "occurred_at", Value: occurredAt.UTC()},
	}}}
	if _, err := guardedUpsert(ctx, p.db.Collection(readmodel.CollProjection), readmodel.WatermarkID, "stream_seq", int64(seq), update); err != nil {
		return fmt.Errorf("advance the watermark to %d: %w", seq, err)
	}
	return nil
}
