package resync_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/project"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/projtest"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/resync"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/verify"
	"github.com/outboxtodo/outboxtodo/shared/outbox"
	"github.com/outboxtodo/outboxtodo/shared/postgres"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
)

// A read model that lost documents, holds stale ones and keeps one the source deleted
// is repaired by resync through the outbox, the stream and the projector.
func TestResyncRepairsThroughTheNormalPath(t *testing.T) {
	t.Parallel()
	env := projtest.New(t)
	pool, _ := dbtest.NewPool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	w := projtest.NewWorld(t)
	u1, u2 := w.CreateUser(), w.CreateUser()
	a := w.CreateTodo(u1, "a")
	w.CreateTodo(u2, "b")
	w.SetCompleted(a, true)
	if err := w.WriteSource(ctx, pool); err != nil {
		t.Fatal(err)
	}
	db, err := env.Store.Active(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The read model saw only the first three events (a is stale and b missing), and
	// keeps a todo whose delete it never got.
	p := project.New(db, 4)
	for _, r := range p.Apply(ctx, w.Events[:3]) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	ghost := uuid.Must(uuid.NewV7())
	if _, err := db.Collection(readmodel.CollTodos).InsertOne(ctx, readmodel.Todo{ID: ghost.String(), UserID: u2.String(), Title: "ghost", Priority: "low", Version: 4}); err != nil {
		t.Fatal(err)
	}
	diffs, err := verify.Run(ctx, pool, db)
	if err != nil || len(diffs) == 0 {
		t.Fatalf("planted drift not seen: %v, %v", diffs, err)
	}

	rep, err := resync.Run(ctx, pool, pool, db, resync.Selection{All: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Emitted != 4 || rep.Tombstones != 1 {
		t.Fatalf("report = %+v, want 4 emitted and 1 tombstone", rep)
	}
	env.RelayOutbox(t, pool)
	env.Start(t, env.ConsumerConfig("projector"))
	projtest.Eventually(t, 60*time.Second, func() (bool, string) {
		diffs, err := verify.Run(ctx, pool, db)
		if err != nil {
			return false, err.Error()
		}
		if len(diffs) > 0 {
			return false, diffs[0].String()
		}
		return true, ""
	})

	// Again, now that every row of those versions is published: the published rows are
	// replaced, and the events are harmless.
	if rep, err = resync.Run(ctx, pool, pool, db, resync.Selection{Todos: []uuid.UUID{a}}); err != nil || rep.Emitted != 1 {
		t.Fatalf("second resync = %+v, %v; want 1 emitted", rep, err)
	}
	env.RelayOutbox(t, pool)
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM outbox WHERE aggregate_id = $1`, a).Scan(&n); err != nil || n != 1 {
		t.Fatalf("outbox rows of the todo = %d, %v; want 1", n, err)
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
	env := projtest.New(t)
	pool, _ := dbtest.NewPool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	w := projtest.NewWorld(t)
	u1, u2 := w.CreateUser(), w.CreateUser()
	w.CreateTodo(u1, "a")
	w.SetCompleted(w.CreateTodo(u1, "b"), true)
	c, d := w.CreateTodo(u2, "c"), w.CreateTodo(u2, "d")
	w.SetCompleted(c, true)
	e := w.CreateTodo(u2, "e")
	applied := len(w.Events)
	w.DeleteTodo(c)
	w.DeleteUser(u1)
	w.DeleteTodo(e)
	relayed := len(w.Events)
	w.DeleteTodo(d)
	if err := w.WriteSource(ctx, pool); err != nil {
		t.Fatal(err)
	}
	// The outbox holds every event; all but the last delete were published.
	if err := postgres.WithTx(ctx, pool, func(tx pgx.Tx) error { return outbox.Insert(ctx, tx, w.Events...) }); err != nil {
		t.Fatal(err)
	}
	for _, ev := range w.Events[:relayed] {
		if _, err := pool.Exec(ctx, `UPDATE outbox SET published_at = now() WHERE event_id = $1`, ev.ID); err != nil {
			t.Fatal(err)
		}
	}
	db, err := env.Store.Active(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The read model saw everything up to the deletes, then lost them, except e's, whose
	// tombstone an operator then removed by hand.
	p := project.New(db, 4)
	for _, r := range p.Apply(ctx, append(w.Events[:applied:applied], w.Events[relayed-1])) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	if _, err := db.Collection(readmodel.CollTodos).DeleteOne(ctx, bson.D{{Key: "_id", Value: e.String()}}); err != nil {
		t.Fatal(err)
	}
	if diffs, err := verify.Run(ctx, pool, db); err != nil || len(diffs) == 0 {
		t.Fatalf("lost deletes not seen: %v, %v", diffs, err)
	}

	rep, err := resync.Run(ctx, pool, pool, db, resync.Selection{All: true})
	if err != nil {
		t.Fatalf("resync: %v", err)
	}
	// c, u1 and its todos a and b get tombstones; d's delete is still to be relayed.
	if rep.Tombstones != 4 || rep.Pending != 1 || rep.Emitted != 1 {
		t.Fatalf("report = %+v, want 4 tombstones, 1 pending (d) and 1 emitted (u2)", rep)
	}
	var dupes int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM (SELECT 1 FROM outbox GROUP BY aggregate_type, aggregate_id, aggregate_version HAVING count(*) > 1) x`).Scan(&dupes); err != nil || dupes != 0 {
		t.Fatalf("%d aggregate versions with more than one outbox row, %v", dupes, err)
	}
	for _, ev := range w.Events[applied : relayed-1] {
		var typ, by string
		err := pool.QueryRow(ctx, `SELECT event_type, payload->'trace'->>'request_id' FROM outbox WHERE aggregate_id = $1 AND aggregate_version = $2 AND published_at IS NULL`,
			ev.AggregateID, ev.Version).Scan(&typ, &by)
		if err != nil || typ != ev.Type || by != "resync" {
			t.Fatalf("%s %s v%d: outbox has %q by %q, %v; want resync's %s of the same version", ev.AggregateType, ev.AggregateID, ev.Version, typ, by, err, ev.Type)
		}
	}

	env.RelayOutbox(t, pool)
	env.Start(t, env.ConsumerConfig("projector"))
	projtest.Eventually(t, 60*time.Second, func() (bool, string) {
		diffs, err := verify.Run(ctx, pool, db)
		if err != nil {
			return false, err.Error()
		}
		if len(diffs) > 0 {
			return false, diffs[0].String()
		}
		return true, ""
	})
	var user readmodel.User
	if err := db.Collection(readmodel.CollUsers).FindOne(ctx, bson.D{{Key: "_id", Value: u1.String()}}).Decode(&user); err != nil || !user.Deleted || user.Version != 2 {
		t.Fatalf("u1 = %+v, %v; want its tombstone at version 2", user, err)
	}
}
