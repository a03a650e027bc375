package resync_test

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/outboxtodo/outboxtodo/services/api/internal/pipelinetest"
	"github.com/outboxtodo/outboxtodo/services/api/internal/resync"
	"github.com/outboxtodo/outboxtodo/services/api/internal/verify"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

func TestMain(m *testing.M) { pipelinetest.Main(m) }

// pick returns the events of events that keep says to, in order.
func pick(events []event.Envelope, keep func(event.Envelope) bool) []event.Envelope {
	var out []event.Envelope
	for _, e := range events {
		if keep(e) {
			out = append(out, e)
		}
	}
	return out
}

// A read model that lost documents, holds stale ones and keeps one the source deleted
// is repaired by resync through the outbox, the stream and the projector.
func TestResyncRepairsThroughTheNormalPath(t *testing.T) {
	t.Parallel()
	env := pipelinetest.New(t)
	ctx := sharedtest.Context(t, 2*time.Minute)

	w := pipelinetest.NewWriter(t, env.Store)
	u1, u2 := w.CreateUser(), w.CreateUser()
	a := w.CreateTodo(u1, "a")
	b := w.CreateTodo(u2, "b")
	w.SetCompleted(a, true)
	// Every row was published, but the read model saw only the first three events (a
	// is stale and b missing), and keeps a todo whose delete it never got.
	events := pipelinetest.Outbox(t, env.Pool)
	if _, err := env.Pool.Exec(ctx, `UPDATE outbox SET published_at = now()`); err != nil {
		t.Fatal(err)
	}
	env.StartProjector(t)
	env.Publish(t, pick(events, func(ev event.Envelope) bool { return ev.Version == 1 && ev.AggregateID != b })...)
	sharedtest.Eventually(t, time.Minute, env.Drained)
	db := env.Active(t)
	ghost := uuid.Must(uuid.NewV7())
	if _, err := db.Collection(readmodel.CollTodos).InsertOne(ctx, readmodel.Todo{ID: ghost.String(), UserID: u2.String(), Title: "ghost", Priority: "low", Version: 4}); err != nil {
		t.Fatal(err)
	}
	diffs, err := verify.Run(ctx, env.Store, db)
	if err != nil || len(diffs) == 0 {
		t.Fatalf("planted drift not seen: %v, %v", diffs, err)
	}

	rep, err := resync.Run(ctx, env.Store, db, resync.Selection{All: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Emitted != 4 || rep.Tombstones != 1 {
		t.Fatalf("report = %+v, want 4 emitted and 1 tombstone", rep)
	}
	env.RelayOutbox(t, env.Pool)
	sharedtest.Eventually(t, 60*time.Second, env.Verified(t, env.Store))

	// Again, now that every row of those versions is published: the published rows are
	// replaced, and the events are harmless.
	if rep, err = resync.Run(ctx, env.Store, db, resync.Selection{Todos: []uuid.UUID{a}}); err != nil || rep.Emitted != 1 {
		t.Fatalf("second resync = %+v, %v; want 1 emitted", rep, err)
	}
	env.RelayOutbox(t, env.Pool)
	var n int
	if err := env.Pool.QueryRow(ctx, `SELECT count(*) FROM outbox WHERE aggregate_id = $1 AND payload->'trace'->>'request_id' = 'resync'`, a).Scan(&n); err != nil || n != 1 {
		t.Fatalf("outbox rows of the todo by resync = %d, %v; want 1", n, err)
	}
	var tomb readmodel.Todo
	if err := db.Collection(readmodel.CollTodos).FindOne(ctx, bson.D{{Key: "_id", Value: ghost.String()}}).Decode(&tomb); err != nil || !tomb.Deleted || tomb.Version != 5 {
		t.Fatalf("ghost = %+v, %v; want a tombstone at version 5", tomb, err)
	}
}

// Deletes the read model never applied, while their outbox rows are still kept (within
// RETENTION): a deleted todo, a deleted user with their todos, and a delete the
// publisher has not relayed yet. resync --all repairs them in one run; each tombstone
// takes the delete's own version and replaces its published row, which the outbox's
// one row per aggregate version would otherwise refuse (SQLSTATE 23505).
func TestResyncRepairsLostDeletesWithinRetention(t *testing.T) {
	t.Parallel()
	env := pipelinetest.New(t)
	ctx := sharedtest.Context(t, 2*time.Minute)

	w := pipelinetest.NewWriter(t, env.Store)
	u1, u2 := w.CreateUser(), w.CreateUser()
	w.CreateTodo(u1, "a")
	w.SetCompleted(w.CreateTodo(u1, "b"), true)
	c, d := w.CreateTodo(u2, "c"), w.CreateTodo(u2, "d")
	w.SetCompleted(c, true)
	e := w.CreateTodo(u2, "e")
	w.DeleteTodo(c)
	w.DeleteUser(u1)
	w.DeleteTodo(e)
	w.DeleteTodo(d)
	// The outbox holds every event; all but the last delete were published.
	events := pipelinetest.Outbox(t, env.Pool)
	if _, err := env.Pool.Exec(ctx, `UPDATE outbox SET published_at = now() WHERE NOT (aggregate_id = $1 AND event_type = $2)`, d, event.TodoDeleted); err != nil {
		t.Fatal(err)
	}
	isDelete := func(ev event.Envelope) bool { return event.IsDelete(ev.Type) }
	// The read model saw everything up to the deletes, then lost them, except e's, whose
	// tombstone an operator then removed by hand.
	env.StartProjector(t)
	env.Publish(t, pick(events, func(ev event.Envelope) bool { return !isDelete(ev) || ev.AggregateID == e })...)
	sharedtest.Eventually(t, time.Minute, env.Drained)
	db := env.Active(t)
	if _, err := db.Collection(readmodel.CollTodos).DeleteOne(ctx, bson.D{{Key: "_id", Value: e.String()}}); err != nil {
		t.Fatal(err)
	}
	if diffs, err := verify.Run(ctx, env.Store, db); err != nil || len(diffs) == 0 {
		t.Fatalf("lost deletes not seen: %v, %v", diffs, err)
	}

	rep, err := resync.Run(ctx, env.Store, db, resync.Selection{All: true})
	if err != nil {
		t.Fatalf("resync: %v", err)
	}
	// c, u1 and its todos a and b get tombstones; d's delete is still to be relayed.
	if rep.Tombstones != 4 || rep.Pending != 1 || rep.Emitted != 1 {
		t.Fatalf("report = %+v, want 4 tombstones, 1 pending (d) and 1 emitted (u2)", rep)
	}
	var dupes int
	if err := env.Pool.QueryRow(ctx, `SELECT count(*) FROM (SELECT 1 FROM outbox GROUP BY aggregate_type, aggregate_id, aggregate_version HAVING count(*) > 1) x`).Scan(&dupes); err != nil || dupes != 0 {
		t.Fatalf("%d aggregate versions with more than one outbox row, %v", dupes, err)
	}
	for _, ev := range pick(events, func(ev event.Envelope) bool { return isDelete(ev) && ev.AggregateID != e && ev.AggregateID != d }) {
		var typ, by string
		err := env.Pool.QueryRow(ctx, `SELECT event_type, payload->'trace'->>'request_id' FROM outbox WHERE aggregate_id = $1 AND aggregate_version = $2 AND published_at IS NULL`,
			ev.AggregateID, ev.Version).Scan(&typ, &by)
		if err != nil || typ != ev.Type || by != "resync" {
			t.Fatalf("%s %s v%d: outbox has %q by %q, %v; want resync's %s of the same version", ev.AggregateType, ev.AggregateID, ev.Version, typ, by, err, ev.Type)
		}
	}

	env.RelayOutbox(t, env.Pool)
	sharedtest.Eventually(t, 60*time.Second, env.Verified(t, env.Store))
	var user readmodel.User
	if err := db.Collection(readmodel.CollUsers).FindOne(ctx, bson.D{{Key: "_id", Value: u1.String()}}).Decode(&user); err != nil || !user.Deleted || user.Version != 2 {
		t.Fatalf("u1 = %+v, %v; want its tombstone at version 2", user, err)
	}
}
