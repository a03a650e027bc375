package postgres_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/services/api/internal/postgres"
	"github.com/outboxtodo/outboxtodo/services/api/internal/todos"
	"github.com/outboxtodo/outboxtodo/services/api/internal/users"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

// lastEvent decodes the newest outbox event of an aggregate.
func lastEvent(t *testing.T, pool *pgxpool.Pool, aggregate uuid.UUID) event.Envelope {
	t.Helper()
	var payload []byte
	err := pool.QueryRow(context.Background(),
		`SELECT payload FROM outbox WHERE aggregate_id = $1 ORDER BY aggregate_version DESC LIMIT 1`, aggregate).Scan(&payload)
	if err != nil {
		t.Fatal(err)
	}
	e, err := event.Decode(payload)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func stats(t *testing.T, pool *pgxpool.Pool, owner uuid.UUID) event.Stats {
	t.Helper()
	var s event.Stats
	err := pool.QueryRow(context.Background(), `SELECT open, completed, version, deleted FROM user_stats WHERE user_id = $1`, owner).
		Scan(&s.Open, &s.Completed, &s.Version, &s.Deleted)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestEveryEventCarriesItsOwnersCounts walks a user through every kind of write: the
// counts in PostgreSQL follow each change in its transaction, their version moves only
// when a count does, and each event carries the counts as of its change. Each todo
// write returns the stats version its events carry: its read-your-writes position.
func TestEveryEventCarriesItsOwnersCounts(t *testing.T) {
	t.Parallel()
	ctx, s, pool := newStore(t, false)
	u := createUser(ctx, t, s, users.SignUp{Email: "c@example.com", DisplayName: "C"})
	position := func(step string, got int64, want event.Stats) {
		t.Helper()
		if got != want.Version {
			t.Fatalf("%s: returned stats version %d, want %d", step, got, want.Version)
		}
	}
	check := func(step string, aggregate uuid.UUID, want event.Stats) {
		t.Helper()
		if got := stats(t, pool, u.ID); got != want {
			t.Fatalf("%s: user_stats = %+v, want %+v", step, got, want)
		}
		if e := lastEvent(t, pool, aggregate); e.Stats == nil || *e.Stats != want {
			t.Fatalf("%s: the event carries %+v, want %+v", step, e.Stats, want)
		}
	}
	check("sign-up", u.ID, event.Stats{Version: 1})

	a := todos.New{Title: "a", Priority: todos.Normal}.Todo(uuid.New(), u.ID, s.Now())
	v, err := s.CreateTodo(ctx, a, event.TraceContext{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	check("create open", a.ID, event.Stats{Open: 1, Version: 2})
	position("create open", v, event.Stats{Version: 2})
	done := true
	b := todos.New{Title: "b", Priority: todos.Normal, Completed: true}.Todo(uuid.New(), u.ID, s.Now())
	if v, err = s.CreateTodo(ctx, b, event.TraceContext{}, nil); err != nil {
		t.Fatal(err)
	}
	check("create completed", b.ID, event.Stats{Open: 1, Completed: 1, Version: 3})
	position("create completed", v, event.Stats{Version: 3})
	if _, v, err = s.UpdateTodo(ctx, u.ID, a.ID, 0, todos.Patch{Completed: &done}, event.TraceContext{}); err != nil {
		t.Fatal(err)
	}
	check("complete", a.ID, event.Stats{Completed: 2, Version: 4})
	position("complete", v, event.Stats{Version: 4})
	title := "renamed"
	if _, v, err = s.UpdateTodo(ctx, u.ID, a.ID, 0, todos.Patch{Title: &title}, event.TraceContext{}); err != nil {
		t.Fatal(err)
	}
	check("rename: counts unchanged, same version", a.ID, event.Stats{Completed: 2, Version: 4})
	position("rename", v, event.Stats{Version: 4})
	name := "Renamed"
	if _, err := s.UpdateUser(ctx, u.ID, 0, users.Patch{DisplayName: &name}, event.TraceContext{}); err != nil {
		t.Fatal(err)
	}
	check("user update", u.ID, event.Stats{Completed: 2, Version: 4})
	if _, v, err = s.DeleteTodo(ctx, u.ID, b.ID, 0, event.TraceContext{}); err != nil {
		t.Fatal(err)
	}
	check("delete completed", b.ID, event.Stats{Completed: 1, Version: 5})
	position("delete completed", v, event.Stats{Version: 5})
	if _, err := s.DeleteUser(ctx, u.ID, 0, event.TraceContext{}); err != nil {
		t.Fatal(err)
	}
	final := event.Stats{Version: 6, Deleted: true}
	check("delete user", u.ID, final)
	check("delete user: the todo's tombstone", a.ID, final)
}

// TestTodoCapHoldsUnderConcurrentCreates: with a cap of 5, of 20 concurrent creates
// exactly enough succeed to reach it, the others fail with ErrTooMany and leave
// nothing behind.
func TestTodoCapHoldsUnderConcurrentCreates(t *testing.T) {
	t.Parallel()
	const limit = 5
	ctx, s, pool := newStore(t, false, postgres.MaxTodosPerUser(limit))
	u := createUser(ctx, t, s, users.SignUp{Email: "cap@example.com", DisplayName: "Cap"})
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		ok, full int
	)
	for range 20 {
		wg.Go(func() {
			td := todos.New{Title: "t", Priority: todos.Low}.Todo(uuid.New(), u.ID, s.Now())
			_, err := s.CreateTodo(ctx, td, event.TraceContext{}, nil)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, todos.ErrTooMany):
				full++
			default:
				t.Errorf("create: %v", err)
			}
		})
	}
	wg.Wait()
	if ok != limit || full != 20-limit {
		t.Fatalf("%d created and %d refused, want %d and %d", ok, full, limit, 20-limit)
	}
	var rows, events int
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM todos), (SELECT count(*) FROM outbox WHERE aggregate_type = 'todo')`).Scan(&rows, &events); err != nil {
		t.Fatal(err)
	}
	if rows != limit || events != limit {
		t.Fatalf("%d todos and %d todo events, want %d each", rows, events, limit)
	}
	if got := stats(t, pool, u.ID); got != (event.Stats{Open: limit, Version: limit + 1}) {
		t.Fatalf("user_stats = %+v", got)
	}
}

// TestDeletingAUserAtTheCapFitsTheRequestTimeout deletes a user holding the default
// most todos under the API's default request timeout (also its statement timeout):
// one transaction, one event per todo, each with the final counts.
func TestDeletingAUserAtTheCapFitsTheRequestTimeout(t *testing.T) {
	t.Parallel()
	pool, _ := dbtest.NewPool(t)
	s := postgres.New(pool, false)
	setup := sharedtest.Context(t, 60*time.Second)
	u := createUser(setup, t, s, users.SignUp{Email: "big@example.com", DisplayName: "Big"})
	// The todos themselves go in by SQL: only the delete is under test.
	if _, err := pool.Exec(setup, `
INSERT INTO todos (id, user_id, title, priority, version, created_at, updated_at)
SELECT gen_random_uuid(), $1, 'todo ' || i, 'normal', 1, now(), now() FROM generate_series(1, $2) AS i`, u.ID, todos.DefaultMaxPerUser); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(setup, `UPDATE user_stats SET open = $2, version = 2 WHERE user_id = $1`, u.ID, todos.DefaultMaxPerUser); err != nil {
		t.Fatal(err)
	}
	ctx := sharedtest.Context(t, 10*time.Second) // REQUEST_TIMEOUT's default
	if _, err := s.DeleteUser(ctx, u.ID, 0, event.TraceContext{}); err != nil {
		t.Fatalf("delete a user with %d todos: %v", todos.DefaultMaxPerUser, err)
	}
	var tombstones, withFinal int
	err := pool.QueryRow(setup, `
SELECT count(*), count(*) FILTER (WHERE payload->'stats' = '{"open": 0, "completed": 0, "version": 3, "deleted": true}'::jsonb)
FROM outbox WHERE event_type = 'todo.deleted'`).Scan(&tombstones, &withFinal)
	if err != nil {
		t.Fatal(err)
	}
	if tombstones != todos.DefaultMaxPerUser || withFinal != tombstones {
		t.Fatalf("%d todo tombstones, %d with the final counts; want %d each", tombstones, withFinal, todos.DefaultMaxPerUser)
	}
}
