package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/outboxtodo/outboxtodo/services/api/internal/idempotency"
	"github.com/outboxtodo/outboxtodo/services/api/internal/todos"
	"github.com/outboxtodo/outboxtodo/services/api/internal/users"
	"github.com/outboxtodo/outboxtodo/shared/event"
	sharedpg "github.com/outboxtodo/outboxtodo/shared/postgres"
)

// The statements on todos.
const (
	todoColumns = `id, user_id, title, notes, completed, completed_at, due, priority, version, created_at, updated_at`

	insertTodoSQL = `INSERT INTO todos (` + todoColumns + `) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`
	selectTodoSQL = `SELECT ` + todoColumns + ` FROM todos WHERE id = $1 AND user_id = $2`
	listTodosSQL  = `
SELECT ` + todoColumns + ` FROM todos
WHERE user_id = $1
  AND ($2::BOOL IS NULL OR completed = $2)
  AND ($3::TIMESTAMPTZ IS NULL OR due < $3)
  AND ($4::TIMESTAMPTZ IS NULL OR due > $4)
  AND ($5::UUID IS NULL OR id > $5)
  AND ($7::TIMESTAMPTZ IS NULL OR updated_at >= $7)
ORDER BY id
LIMIT $6`
	lockTodoSQL   = `SELECT ` + todoColumns + ` FROM todos WHERE id = $1 AND user_id = $2 FOR UPDATE`
	updateTodoSQL = `
UPDATE todos SET title = $3, notes = $4, completed = $5, completed_at = $6, due = $7, priority = $8,
                 version = $9, updated_at = $10
WHERE id = $1 AND user_id = $2`
	lockTodoStateSQL   = `SELECT version, completed FROM todos WHERE id = $1 AND user_id = $2 FOR UPDATE`
	deleteTodoSQL      = `DELETE FROM todos WHERE id = $1 AND user_id = $2`
	deleteUserTodosSQL = `DELETE FROM todos WHERE user_id = $1 RETURNING id, version`

	// The operator tools' statements: they act on every todo, whoever owns it.
	allTodosSQL     = `SELECT ` + todoColumns + ` FROM todos`
	todoIDsSQL      = `SELECT id FROM todos`
	lockTodoByIDSQL = `SELECT ` + todoColumns + ` FROM todos WHERE id = $1 FOR UPDATE`
)

func scanTodo(row scanner) (todos.Todo, error) {
	var t todos.Todo
	err := row.Scan(&t.ID, &t.UserID, &t.Title, &t.Notes, &t.Completed, &t.CompletedAt, &t.Due, &t.Priority,
		&t.Version, &t.CreatedAt, &t.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return t, todos.ErrNotFound
	}
	if err != nil {
		return t, fmt.Errorf("read todo: %w", err)
	}
	t.CreatedAt, t.UpdatedAt = t.CreatedAt.UTC(), t.UpdatedAt.UTC()
	t.CompletedAt, t.Due = utc(t.CompletedAt), utc(t.Due)
	return t, nil
}

// CreateTodo stores a new todo with its todo.created event and idem, as CreateUser
// does, and returns the owner's stats version after it. It fails with
// users.ErrNotFound when the owner was deleted meanwhile and with
// idempotency.ErrRace when a concurrent request stored the same key first.
func (s *Store) CreateTodo(ctx context.Context, t todos.Todo, trace event.TraceContext, idem *idempotency.Record) (int64, error) {
	ev, err := event.New(event.TodoCreated, t.ID, t.UserID, t.Version, t.CreatedAt, trace, t.Data())
	if err != nil {
		return 0, err
	}
	var statsVersion int64
	// One round trip: every statement is known before the first is sent, and each
	// refusal (the owner gone, the cap, a concurrent key) is raised by the server.
	err = s.runAtomic(ctx, func(c *change) error {
		// The insert first: its foreign key check waits for a concurrent delete of the
		// owner, which takes the stats row after the user row, so the two cannot
		// deadlock.
		c.b.Queue(insertTodoSQL,
			t.ID, t.UserID, t.Title, t.Notes, t.Completed, t.CompletedAt, t.Due, t.Priority, t.Version, t.CreatedAt, t.UpdatedAt)
		open, completed := delta(&t)
		c.countTodos(t.UserID, open, completed, s.maxTodos, &statsVersion)
		if err := c.events(ev); err != nil {
			return err
		}
		return c.idempotency(idem, t.CreatedAt)
	})
	switch {
	case sharedpg.SQLState(err) == "23503": // foreign key: the owner is gone
		return 0, users.ErrNotFound
	case sharedpg.IsCheckViolation(err, "todo_cap_reached"):
		return 0, todos.ErrTooMany
	case err != nil:
		return 0, fmt.Errorf("create todo: %w", err)
	}
	return statsVersion, nil
}

// Todo returns one todo of owner, or todos.ErrNotFound, also when it belongs to
// someone else.
func (s *Store) Todo(ctx context.Context, owner, id uuid.UUID) (todos.Todo, error) {
	return scanTodo(s.pool.QueryRow(ctx, selectTodoSQL, id, owner))
}

// ListTodos returns up to limit todos of owner matching f, in id (creation) order,
// starting after the todo with id after (uuid.Nil: from the first).
func (s *Store) ListTodos(ctx context.Context, owner uuid.UUID, f todos.Filter, after uuid.UUID, limit int) ([]todos.Todo, error) {
	var afterArg *uuid.UUID
	if after != uuid.Nil {
		afterArg = &after
	}
	rows, err := s.pool.Query(ctx, listTodosSQL, owner, f.Completed, f.DueBefore, f.DueAfter, afterArg, limit, f.UpdatedSince)
	out, err := collect(rows, err, scanTodo)
	if err != nil {
		return nil, fmt.Errorf("list todos: %w", err)
	}
	return out, nil
}

// UpdateTodo applies p to a todo of owner and stores it with its todo.updated event,
// and returns it with the owner's stats version after it. When ifMatch is not zero and
// differs from the current version it fails with todos.ErrVersionMismatch and changes
// nothing.
func (s *Store) UpdateTodo(ctx context.Context, owner, id uuid.UUID, ifMatch int64, p todos.Patch, trace event.TraceContext) (todos.Todo, int64, error) {
	var (
		out          todos.Todo
		statsVersion int64
	)
	err := s.run(ctx, func(tx pgx.Tx, c *change) error {
		t, err := scanTodo(tx.QueryRow(ctx, lockTodoSQL, id, owner))
		if err != nil {
			return err
		}
		if ifMatch != 0 && ifMatch != t.Version {
			return todos.ErrVersionMismatch
		}
		out = t.Apply(p, s.Now())
		ev, err := event.New(event.TodoUpdated, out.ID, out.UserID, out.Version, out.UpdatedAt, trace, out.Data())
		if err != nil {
			return err
		}
		c.b.Queue(updateTodoSQL,
			out.ID, out.UserID, out.Title, out.Notes, out.Completed, out.CompletedAt, out.Due, out.Priority,
			out.Version, out.UpdatedAt)
		newOpen, newCompleted := delta(&out)
		oldOpen, oldCompleted := delta(&t)
		c.countTodos(owner, newOpen-oldOpen, newCompleted-oldCompleted, 0, &statsVersion)
		if err := c.events(ev); err != nil {
			return err
		}
		return c.send(ctx, tx, "update todo")
	})
	return out, statsVersion, err
}

// DeleteTodo deletes a todo of owner with its todo.deleted event and returns the
// tombstone's version and the owner's stats version after it. ifMatch works as in
// UpdateTodo.
func (s *Store) DeleteTodo(ctx context.Context, owner, id uuid.UUID, ifMatch int64, trace event.TraceContext) (int64, int64, error) {
	var version, statsVersion int64
	err := s.run(ctx, func(tx pgx.Tx, c *change) error {
		var (
			current   int64
			completed bool
		)
		err := tx.QueryRow(ctx, lockTodoStateSQL, id, owner).
			Scan(&current, &completed)
		if errors.Is(err, pgx.ErrNoRows) {
			return todos.ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("select todo: %w", err)
		}
		if ifMatch != 0 && ifMatch != current {
			return todos.ErrVersionMismatch
		}
		version = current + 1
		ev, err := event.NewTombstone(event.TodoDeleted, id, owner, version, s.Now(), trace)
		if err != nil {
			return err
		}
		c.b.Queue(deleteTodoSQL, id, owner)
		open, done := delta(&todos.Todo{Completed: completed})
		c.countTodos(owner, -open, -done, 0, &statsVersion)
		if err := c.events(ev); err != nil {
			return err
		}
		return c.send(ctx, tx, "delete todo")
	})
	return version, statsVersion, err
}

// LockTodo reads a todo's current state, whoever owns it, and locks its row until the
// end of t, as LockUser does. It fails with todos.ErrNotFound when there is no such
// todo.
func (t *Tx) LockTodo(ctx context.Context, id uuid.UUID) (todos.Todo, error) {
	return scanTodo(t.tx.QueryRow(ctx, lockTodoByIDSQL, id))
}
