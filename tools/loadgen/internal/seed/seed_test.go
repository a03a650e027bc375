package seed

import (
	"context"
	"testing"
	"time"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/shared/event"
	sharedpg "github.com/outboxtodo/outboxtodo/shared/postgres"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

// outboxEvents decodes the payloads of the outbox rows of one event type, in order.
func outboxEvents(ctx context.Context, t *testing.T, db sharedpg.DBTX, eventType string) []event.Envelope {
	t.Helper()
	rows, err := db.Query(ctx, `SELECT payload FROM outbox WHERE event_type = $1 ORDER BY created_at, event_id`, eventType)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []event.Envelope
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			t.Fatal(err)
		}
		e, err := event.Decode(b)
		if err != nil {
			t.Fatalf("outbox payload %s: %v", b, err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// Seeded rows are the API's rows: every user and todo with its stats, and one outbox
// row per aggregate whose stats snapshot matches the counts. Completing todos moves
// the counts, bumps the stats version and writes todo.updated events.
func TestCreateAndComplete(t *testing.T) {
	t.Parallel()
	ctx := sharedtest.Context(t, time.Minute)
	pool, err := sharedpg.Connect(ctx, dbtest.New(t), sharedpg.PoolConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()

	// Three users of four todos, every second one completed, two users per transaction.
	set, err := Create(ctx, pool, Plan{Users: 3, PerUser: 4, CompletedEvery: 2, UsersPerTx: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Users) != 3 || len(set.Todos) != 12 {
		t.Fatalf("set of %d users and %d todos, want 3 and 12", len(set.Users), len(set.Todos))
	}
	var users, todos, completed, statsRows, open, done int64
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM todos),
  (SELECT count(*) FROM todos WHERE completed), (SELECT count(*) FROM user_stats),
  (SELECT sum(open) FROM user_stats), (SELECT sum(completed) FROM user_stats)`).Scan(&users, &todos, &completed, &statsRows, &open, &done); err != nil {
		t.Fatal(err)
	}
	if users != 3 || todos != 12 || completed != 6 || statsRows != 3 || open != 6 || done != 6 {
		t.Fatalf("tables hold users %d, todos %d (completed %d), user_stats %d (open %d, completed %d); want 3, 12 (6), 3 (6, 6)",
			users, todos, completed, statsRows, open, done)
	}
	if n := len(outboxEvents(ctx, t, pool, event.UserCreated)); n != 3 {
		t.Fatalf("%d user.created rows, want 3", n)
	}
	created := outboxEvents(ctx, t, pool, event.TodoCreated)
	if len(created) != 12 {
		t.Fatalf("%d todo.created rows, want 12", len(created))
	}
	for _, e := range created {
		if e.Stats == nil || e.Stats.Open != 2 || e.Stats.Completed != 2 || e.Stats.Version != 1 {
			t.Fatalf("todo.created of %s carries stats %+v, want open 2, completed 2, version 1", e.AggregateID, e.Stats)
		}
		if _, err := e.Todo(); err != nil {
			t.Fatal(err)
		}
	}

	// Three todos: the first user's two open ones and the second user's first.
	n, err := Complete(ctx, pool, &set, 3)
	if err != nil || n != 3 {
		t.Fatalf("Complete = %d, %v; want 3", n, err)
	}
	updated := outboxEvents(ctx, t, pool, event.TodoUpdated)
	if len(updated) != 3 {
		t.Fatalf("%d todo.updated rows, want 3", len(updated))
	}
	wantStats := map[string]event.Stats{
		set.Users[0].ID.String(): {Open: 0, Completed: 4, Version: 2},
		set.Users[1].ID.String(): {Open: 1, Completed: 3, Version: 2},
	}
	for _, e := range updated {
		td, err := e.Todo()
		if err != nil {
			t.Fatal(err)
		}
		if !td.Completed || td.Version != 2 || e.Stats == nil || *e.Stats != wantStats[td.UserID.String()] {
			t.Fatalf("todo.updated %+v with stats %+v; want completed, version 2, stats %+v", td, e.Stats, wantStats[td.UserID.String()])
		}
	}
	var versions int64
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM todos WHERE completed AND version = 2`).Scan(&versions); err != nil {
		t.Fatal(err)
	}
	if versions != 3 {
		t.Fatalf("%d todos completed at version 2, want 3", versions)
	}
	var inSet, bumped int
	for _, td := range set.Todos {
		if td.Completed {
			inSet++
		}
		if td.Version == 2 {
			bumped++
		}
	}
	if inSet != 9 || bumped != 3 {
		t.Fatalf("the set shows %d completed todos, %d at version 2; want 9 and 3", inSet, bumped)
	}
}
