package postgres_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxtodo/outboxtodo/services/api/internal/idempotency"
	"github.com/outboxtodo/outboxtodo/services/api/internal/postgres"
	"github.com/outboxtodo/outboxtodo/services/api/internal/todos"
	"github.com/outboxtodo/outboxtodo/services/api/internal/users"
	"github.com/outboxtodo/outboxtodo/shared/event"
)

// written counts what todo creations leave: todos, todo events, the stats version and
// idempotency keys (and write_refusals, which must never hold a row).
type written struct{ todos, events, statsVersion, keys, refusals int }

func writtenNow(t *testing.T, pool *pgxpool.Pool) written {
	t.Helper()
	var w written
	err := pool.QueryRow(context.Background(), `SELECT
    (SELECT count(*) FROM todos)::int, (SELECT count(*) FROM outbox WHERE aggregate_type = 'todo')::int,
    (SELECT COALESCE(sum(version), 0) FROM user_stats)::int, (SELECT count(*) FROM idempotency_keys)::int,
    (SELECT count(*) FROM write_refusals)::int`).Scan(&w.todos, &w.events, &w.statsVersion, &w.keys, &w.refusals)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// A todo creation is one implicit transaction that the server commits unless one of its
// statements fails: each refusal is raised by the server and leaves nothing behind,
// and an expired idempotency key is replaced, not refused.
func TestCreateTodoRefusalsLeaveNothing(t *testing.T) {
	t.Parallel()
	ctx, s, pool := newStore(t, true, postgres.MaxTodosPerUser(2))
	owner := createUser(ctx, t, s, users.SignUp{Email: "r@example.com", DisplayName: "R"})
	create := func(owner uuid.UUID, idem *idempotency.Record) error {
		td := todos.New{Title: "t", Priority: todos.Normal}.Todo(uuid.New(), owner, s.Now())
		_, err := s.CreateTodo(ctx, td, event.TraceContext{}, idem)
		return err
	}
	key := func(k string) *idempotency.Record {
		return &idempotency.Record{Scope: owner.ID.String(), Key: k, Fingerprint: []byte(k),
			Response: idempotency.Response{Status: 201, Body: []byte(`{}`)}}
	}
	if err := create(owner.ID, key("first")); err != nil {
		t.Fatal(err)
	}
	before := writtenNow(t, pool)
	if before != (written{todos: 1, events: 1, statsVersion: 2, keys: 1}) {
		t.Fatalf("after one creation: %+v", before)
	}

	refusals := []struct {
		name string
		do   func() error
		want error
	}{
		{"a live key", func() error { return create(owner.ID, key("first")) }, idempotency.ErrRace},
		{"an owner who does not exist", func() error { return create(uuid.New(), nil) }, users.ErrNotFound},
	}
	for _, r := range refusals {
		if err := r.do(); !errors.Is(err, r.want) {
			t.Fatalf("%s: err = %v, want %v", r.name, err, r.want)
		}
		if got := writtenNow(t, pool); got != before {
			t.Fatalf("%s left %+v, want %+v", r.name, got, before)
		}
	}

	// An expired key is replaced by the new request's.
	if _, err := pool.Exec(ctx, `UPDATE idempotency_keys SET created_at = created_at - $1::interval`, (idempotency.TTL + time.Minute).String()); err != nil {
		t.Fatal(err)
	}
	if err := create(owner.ID, key("first")); err != nil {
		t.Fatalf("over an expired key: %v", err)
	}
	if got := writtenNow(t, pool); got != (written{todos: 2, events: 2, statsVersion: 3, keys: 1}) {
		t.Fatalf("after the creation over an expired key: %+v", got)
	}

	// The cap (2): the stats update changes no row and the statement's refusal rolls
	// back the todo inserted before it.
	before = writtenNow(t, pool)
	if err := create(owner.ID, key("third")); !errors.Is(err, todos.ErrTooMany) {
		t.Fatalf("over the cap: err = %v, want ErrTooMany", err)
	}
	if got := writtenNow(t, pool); got != before {
		t.Fatalf("the refused creation left %+v, want %+v", got, before)
	}
}
