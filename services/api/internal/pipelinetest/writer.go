package pipelinetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outboxtodo/outboxtodo/services/api/internal/postgres"
	"github.com/outboxtodo/outboxtodo/services/api/internal/todos"
	"github.com/outboxtodo/outboxtodo/services/api/internal/tokens"
	"github.com/outboxtodo/outboxtodo/services/api/internal/users"
	"github.com/outboxtodo/outboxtodo/shared/event"
)

// Writer makes the API's writes through its store, as requests would: each commits its
// rows with their outbox rows, each event carrying its owner's stats snapshot. A
// failed write fails the test.
type Writer struct {
	t     testing.TB
	store *postgres.Store
	owner map[uuid.UUID]uuid.UUID // of each todo
	seq   int
}

// NewWriter writes through store.
func NewWriter(t testing.TB, store *postgres.Store) *Writer {
	return &Writer{t: t, store: store, owner: map[uuid.UUID]uuid.UUID{}}
}

// On makes w write through store from now on: the source of truth restored from a
// backup, say.
func (w *Writer) On(store *postgres.Store) { w.store = store }

func (w *Writer) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

func (w *Writer) check(what string, err error) {
	w.t.Helper()
	if err != nil {
		w.t.Fatalf("%s: %v", what, err)
	}
}

// CreateUser signs up a user.
func (w *Writer) CreateUser() uuid.UUID {
	w.t.Helper()
	ctx, cancel := w.ctx()
	defer cancel()
	w.seq++
	now := w.store.Now()
	u := users.SignUp{Email: fmt.Sprintf("user%d@example.com", w.seq), DisplayName: fmt.Sprintf("User %d", w.seq)}.User(uuid.Must(uuid.NewV7()), now)
	_, hash := tokens.New()
	token := tokens.Token{ID: uuid.New(), UserID: u.ID, Hash: hash, CreatedAt: now}
	w.check("sign up", w.store.CreateUser(ctx, u, "", token, event.TraceContext{}, nil))
	return u.ID
}

// RenameUser changes a user's display name.
func (w *Writer) RenameUser(id uuid.UUID, name string) {
	w.t.Helper()
	ctx, cancel := w.ctx()
	defer cancel()
	_, err := w.store.UpdateUser(ctx, id, 0, users.Patch{DisplayName: &name}, event.TraceContext{})
	w.check("rename user", err)
}

// CreateTodo adds a todo for owner.
func (w *Writer) CreateTodo(owner uuid.UUID, title string) uuid.UUID {
	w.t.Helper()
	ctx, cancel := w.ctx()
	defer cancel()
	notes := "notes of " + title
	td := todos.New{Title: title, Notes: &notes, Priority: todos.Normal}.Todo(uuid.Must(uuid.NewV7()), owner, w.store.Now())
	_, err := w.store.CreateTodo(ctx, td, event.TraceContext{}, nil)
	w.check("create todo", err)
	w.owner[td.ID] = owner
	return td.ID
}

// SetCompleted completes or reopens a todo.
func (w *Writer) SetCompleted(id uuid.UUID, done bool) {
	w.t.Helper()
	ctx, cancel := w.ctx()
	defer cancel()
	_, _, err := w.store.UpdateTodo(ctx, w.owner[id], id, 0, todos.Patch{Completed: &done}, event.TraceContext{})
	w.check("complete todo", err)
}

// DeleteTodo deletes a todo.
func (w *Writer) DeleteTodo(id uuid.UUID) {
	w.t.Helper()
	ctx, cancel := w.ctx()
	defer cancel()
	_, _, err := w.store.DeleteTodo(ctx, w.owner[id], id, 0, event.TraceContext{})
	w.check("delete todo", err)
}

// DeleteUser deletes a user with their todos, in one write.
func (w *Writer) DeleteUser(id uuid.UUID) {
	w.t.Helper()
	ctx, cancel := w.ctx()
	defer cancel()
	_, err := w.store.DeleteUser(ctx, id, 0, event.TraceContext{})
	w.check("delete user", err)
}
