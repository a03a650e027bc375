package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxtodo/outboxtodo/services/api/internal/apitest"
	"github.com/outboxtodo/outboxtodo/services/api/internal/postgres"
	"github.com/outboxtodo/outboxtodo/services/api/internal/todos"
	"github.com/outboxtodo/outboxtodo/services/api/internal/users"
	"github.com/outboxtodo/outboxtodo/shared/event"
	sharedpg "github.com/outboxtodo/outboxtodo/shared/postgres"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

// proxiedStore is a store whose connections pass through a PGProxy, and a direct pool
// on the same database to look at the truth.
func proxiedStore(t *testing.T) (*postgres.Store, *pgxpool.Pool, *sharedtest.PGProxy) {
	t.Helper()
	pool, direct, proxy := apitest.ProxiedPool(t)
	return postgres.New(pool, true), direct, proxy
}

// TestLostCommitIsResolved breaks the connection at COMMIT of each kind of write, once
// before the server ran it and once after: the store answers the real outcome, never a
// failure for a write that landed.
func TestLostCommitIsResolved(t *testing.T) {
	t.Parallel()
	type write struct {
		name string
		// do runs the write whose commit is broken; landed counts what it left.
		do     func(ctx context.Context, s *postgres.Store, owner users.User, todo todos.Todo) error
		landed func(t *testing.T, direct *pgxpool.Pool, owner users.User, todo todos.Todo) bool
	}
	todoVersion := func(t *testing.T, direct *pgxpool.Pool, id uuid.UUID) int {
		return count(t, direct, `SELECT COALESCE(max(version), 0)::int FROM todos WHERE id = $1`, id)
	}
	writes := []write{
		{"create todo", func(ctx context.Context, s *postgres.Store, owner users.User, _ todos.Todo) error {
			td := todos.New{Title: "lost", Priority: todos.Normal}.Todo(uuid.New(), owner.ID, s.Now())
			_, err := s.CreateTodo(ctx, td, event.TraceContext{}, nil)
			return err
		}, func(t *testing.T, direct *pgxpool.Pool, owner users.User, _ todos.Todo) bool {
			return count(t, direct, `SELECT count(*)::int FROM todos WHERE user_id = $1 AND title = 'lost'`, owner.ID) == 1
		}},
		{"update todo", func(ctx context.Context, s *postgres.Store, owner users.User, todo todos.Todo) error {
			title := "renamed"
			_, _, err := s.UpdateTodo(ctx, owner.ID, todo.ID, 1, todos.Patch{Title: &title}, event.TraceContext{})
			return err
		}, func(t *testing.T, direct *pgxpool.Pool, _ users.User, todo todos.Todo) bool {
			return todoVersion(t, direct, todo.ID) == 2
		}},
		{"delete todo", func(ctx context.Context, s *postgres.Store, owner users.User, todo todos.Todo) error {
			_, _, err := s.DeleteTodo(ctx, owner.ID, todo.ID, 1, event.TraceContext{})
			return err
		}, func(t *testing.T, direct *pgxpool.Pool, _ users.User, todo todos.Todo) bool {
			return todoVersion(t, direct, todo.ID) == 0
		}},
		{"issue token", func(ctx context.Context, s *postgres.Store, owner users.User, _ todos.Todo) error {
			return s.CreateToken(ctx, newToken(owner.ID, s.Now()), nil)
		}, func(t *testing.T, direct *pgxpool.Pool, owner users.User, _ todos.Todo) bool {
			return count(t, direct, `SELECT count(*)::int FROM api_tokens WHERE user_id = $1`, owner.ID) == 2
		}},
		{"revoke token", func(ctx context.Context, s *postgres.Store, owner users.User, _ todos.Todo) error {
			ts, err := s.Tokens(ctx, owner.ID, s.Now())
			if err != nil || len(ts) != 1 {
				return fmt.Errorf("the owner's tokens: %v %v", ts, err)
			}
			_, err = s.RevokeToken(ctx, owner.ID, ts[0].ID)
			return err
		}, func(t *testing.T, direct *pgxpool.Pool, owner users.User, _ todos.Todo) bool {
			return count(t, direct, `SELECT count(*)::int FROM api_tokens WHERE user_id = $1`, owner.ID) == 0
		}},
		{"delete user", func(ctx context.Context, s *postgres.Store, owner users.User, _ todos.Todo) error {
			_, err := s.DeleteUser(ctx, owner.ID, 0, event.TraceContext{})
			return err
		}, func(t *testing.T, direct *pgxpool.Pool, owner users.User, _ todos.Todo) bool {
			return count(t, direct, `SELECT count(*)::int FROM users WHERE id = $1`, owner.ID) == 0
		}},
	}
	for _, w := range writes {
		for _, fault := range []sharedtest.CommitFault{sharedtest.CommitLost, sharedtest.AnswerLost} {
			landed := fault == sharedtest.AnswerLost
			name := w.name + "/commit never arrived"
			if landed {
				name = w.name + "/answer lost"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				s, direct, proxy := proxiedStore(t)
				ctx := sharedtest.Context(t, 30*time.Second)
				owner := createUser(ctx, t, s, users.SignUp{Email: "o@example.com", DisplayName: "O"})
				todo := todos.New{Title: "t", Priority: todos.Normal}.Todo(uuid.New(), owner.ID, s.Now())
				if _, err := s.CreateTodo(ctx, todo, event.TraceContext{}, nil); err != nil {
					t.Fatal(err)
				}

				proxy.FailNextCommit(fault)
				err := w.do(ctx, s, owner, todo)
				if proxy.FaultPending() {
					t.Fatalf("the write (err %v) sent no commit through the proxy", err)
				}
				switch {
				case landed && err != nil:
					t.Fatalf("the commit landed, yet the store answered %v", err)
				case !landed && (!errors.Is(err, sharedpg.ErrNotCommitted) || errors.Is(err, sharedpg.ErrCommitUnknown) || !sharedpg.IsUnavailable(err)):
					t.Fatalf("the commit never arrived: err = %v, want ErrNotCommitted (unavailable, not unknown)", err)
				}
				if got := w.landed(t, direct, owner, todo); got != landed {
					t.Fatalf("the write landed = %v, want %v", got, landed)
				}
				// The change and its events went together, or neither did.
				if n := count(t, direct, `SELECT count(*)::int FROM outbox`); landed != (n > 2) && w.name != "issue token" && w.name != "revoke token" {
					t.Fatalf("%d outbox rows after the write (landed=%v)", n, landed)
				}
			})
		}
	}
}

// TestUnresolvableCommitIsUnknown: when the database stays unreachable after the
// commit's answer was lost, the store says the outcome is unknown, never "failed".
func TestUnresolvableCommitIsUnknown(t *testing.T) {
	t.Parallel()
	s, direct, proxy := proxiedStore(t)
	ctx := sharedtest.Context(t, 30*time.Second)
	owner := createUser(ctx, t, s, users.SignUp{Email: "u@example.com", DisplayName: "U"})
	proxy.Refuse(true)
	proxy.FailNextCommit(sharedtest.AnswerLost)
	td := todos.New{Title: "t", Priority: todos.Normal}.Todo(uuid.New(), owner.ID, s.Now())
	_, err := s.CreateTodo(ctx, td, event.TraceContext{}, nil)
	if !errors.Is(err, sharedpg.ErrCommitUnknown) {
		t.Fatalf("err = %v, want ErrCommitUnknown", err)
	}
	if n := count(t, direct, `SELECT count(*)::int FROM todos WHERE id = $1`, td.ID); n != 1 {
		t.Fatalf("the commit landed but %d rows exist", n)
	}
}
