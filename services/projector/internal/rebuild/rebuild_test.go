package rebuild_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/projtest"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/rebuild"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/verify"
)

// A rebuild fills a fresh read model equal to PostgreSQL from the stream alone, flips
// readers to it while the live projector runs, and the live projector follows.
func TestRebuildFillsFreshReadModelAndSwitches(t *testing.T) {
	t.Parallel()
	env := projtest.New(t)
	pool, _ := dbtest.NewPool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	w := projtest.NewWorld(t)
	for i := range 4 {
		u := w.CreateUser()
		for j := range 3 {
			td := w.CreateTodo(u, "t")
			if (i+j)%2 == 0 {
				w.SetCompleted(td, true)
			}
		}
	}
	w.DeleteUser(w.CreateUser())
	env.Publish(t, w.Events...)
	live := env.ConsumerConfig("projector")
	env.Start(t, live)

	res, err := rebuild.Run(ctx, rebuild.Config{Consumer: live, Database: "todo_read_rebuilt", Settle: time.Second, Timeout: time.Minute}, env.JS, env.Store, env.Log)
	if err != nil {
		t.Fatal(err)
	}
	if res.Previous != env.Control || res.Events != uint64(len(w.Events)) {
		t.Fatalf("result = %+v, want from %s with %d events", res, env.Control, len(w.Events))
	}
	t.Logf("rebuild: %d events in %s (%.0f events/s)", res.Events, res.CatchUp, res.EventsPerSecond)
	if name, err := env.Store.ActiveName(ctx); err != nil || name != "todo_read_rebuilt" {
		t.Fatalf("active = %q, %v", name, err)
	}
	if _, err := env.JS.Consumer(ctx, env.Stream, "rebuild-todo_read_rebuilt"); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("rebuild consumer left behind: %v", err)
	}

	// Writes after the switch reach the new read model through the live projector.
	w.SetCompleted(w.CreateTodo(w.CreateUser(), "after"), true)
	if err := w.WriteSource(ctx, pool); err != nil {
		t.Fatal(err)
	}
	env.Publish(t, w.Events[len(w.Events)-3:]...)
	active := env.Mongo.Database("todo_read_rebuilt")
	projtest.Eventually(t, 60*time.Second, func() (bool, string) {
		diffs, err := verify.Run(ctx, pool, active)
		if err != nil {
			return false, err.Error()
		}
		if len(diffs) > 0 {
			return false, diffs[0].String()
		}
		return true, ""
	})
}
