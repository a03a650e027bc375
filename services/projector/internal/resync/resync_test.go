package resync_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/project"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/projtest"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/resync"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/verify"
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
