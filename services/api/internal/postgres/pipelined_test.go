package postgres_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/services/api/internal/postgres"
	"github.com/outboxtodo/outboxtodo/services/api/internal/todos"
	"github.com/outboxtodo/outboxtodo/services/api/internal/users"
	"github.com/outboxtodo/outboxtodo/shared/event"
)

// roundTrips records what each connection sends: a query, or a batch's queries.
type roundTrips struct {
	mu   sync.Mutex
	sent []string
}

func (r *roundTrips) add(s string) {
	r.mu.Lock()
	r.sent = append(r.sent, s)
	r.mu.Unlock()
}

func (r *roundTrips) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.sent
	r.sent = nil
	return out
}

func (r *roundTrips) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	r.add(strings.ToUpper(strings.Fields(d.SQL)[0]))
	return ctx
}

func (r *roundTrips) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (r *roundTrips) TraceBatchStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceBatchStartData) context.Context {
	var qs []string
	for _, q := range d.Batch.QueuedQueries {
		qs = append(qs, strings.ToUpper(strings.Fields(q.SQL)[0]))
	}
	r.add("batch(" + strings.Join(qs, " ") + ")")
	return ctx
}

func (r *roundTrips) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (r *roundTrips) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}

// A write's BEGIN travels with its first statements: a create is two round trips (its
// statements, COMMIT), an update and a delete three (the row they lock, their
// statements, COMMIT); a write refused after its first statement rolls back.
func TestWritesBeginWithTheirFirstStatements(t *testing.T) {
	t.Parallel()
	_, dbURL := dbtest.NewPool(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	trips := &roundTrips{}
	cfg.ConnConfig.Tracer = trips
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	s := postgres.New(pool, false)
	u := users.SignUp{Email: "p@example.com", DisplayName: "P"}.User(uuid.New(), s.Now())
	if err := s.CreateUser(ctx, u, newToken(u.ID, s.Now()), event.TraceContext{}, nil); err != nil {
		t.Fatal(err)
	}
	trips.take()

	td := todos.New{Title: "t", Priority: todos.Normal}.Todo(uuid.New(), u.ID, s.Now())
	if err := s.CreateTodo(ctx, td, event.TraceContext{}, nil); err != nil {
		t.Fatal(err)
	}
	want := func(what string, sent ...string) {
		t.Helper()
		if got := trips.take(); strings.Join(got, ", ") != strings.Join(sent, ", ") {
			t.Errorf("%s sent %q, want %q", what, got, sent)
		}
	}
	want("create", "batch(BEGIN INSERT UPDATE INSERT)", "COMMIT")
	title := "renamed"
	if _, err := s.UpdateTodo(ctx, u.ID, td.ID, 1, todos.Patch{Title: &title}, event.TraceContext{}); err != nil {
		t.Fatal(err)
	}
	want("update", "batch(BEGIN SELECT)", "batch(UPDATE INSERT)", "COMMIT")
	if _, err := s.UpdateTodo(ctx, u.ID, td.ID, 1, todos.Patch{Title: &title}, event.TraceContext{}); !errors.Is(err, todos.ErrVersionMismatch) {
		t.Fatalf("stale If-Match: %v", err)
	}
	want("refused update", "batch(BEGIN SELECT)", "ROLLBACK")
	if _, err := s.DeleteTodo(ctx, u.ID, uuid.New(), 0, event.TraceContext{}); !errors.Is(err, todos.ErrNotFound) {
		t.Fatalf("delete of no todo: %v", err)
	}
	want("delete of no todo", "batch(BEGIN SELECT)", "ROLLBACK")
	if _, err := s.DeleteTodo(ctx, u.ID, td.ID, 2, event.TraceContext{}); err != nil {
		t.Fatal(err)
	}
	want("delete", "batch(BEGIN SELECT)", "batch(DELETE UPDATE INSERT)", "COMMIT")
	// Every connection went back to the pool outside a transaction.
	for _, c := range pool.AcquireAllIdle(ctx) {
		if st := c.Conn().PgConn().TxStatus(); st != 'I' {
			t.Errorf("a pooled connection in transaction status %c", st)
		}
		c.Release()
	}
}
