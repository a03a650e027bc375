package projtest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/outboxtodo/outboxtodo/shared/drift"
	"github.com/outboxtodo/outboxtodo/shared/event"
)

// World plays the API: each write changes its state and appends the event the API's
// outbox would hold, in commit order, each with its owner's stats snapshot as the write
// left it.
type World struct {
	t     testing.TB
	now   time.Time
	Users map[uuid.UUID]event.UserData
	Todos map[uuid.UUID]event.TodoData
	// Stats are the rows of user_stats: every user's counts and their version, deleted
	// users' last snapshot included. The version moves when a count changes and when
	// the user is deleted.
	Stats  map[uuid.UUID]event.Stats
	Events []event.Envelope
	seq    int
}

// NewWorld starts an empty world.
func NewWorld(t testing.TB) *World {
	return &World{t: t, now: time.Now().UTC().Truncate(time.Microsecond), Users: map[uuid.UUID]event.UserData{},
		Todos: map[uuid.UUID]event.TodoData{}, Stats: map[uuid.UUID]event.Stats{}}
}

func (w *World) tick() time.Time {
	w.now = w.now.Add(time.Millisecond + 123*time.Microsecond)
	return w.now
}

func (w *World) emit(typ string, agg, owner uuid.UUID, version int64, data any) event.Envelope {
	w.t.Helper()
	e, err := event.New(typ, agg, owner, version, w.now, event.TraceContext{}, data)
	if err != nil {
		w.t.Fatal(err)
	}
	st := w.Stats[owner]
	e.Stats = &st
	if err := e.Validate(); err != nil {
		w.t.Fatal(err)
	}
	w.Events = append(w.Events, e)
	return e
}

func newID(t testing.TB) uuid.UUID {
	id, err := uuid.NewV7()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// UsersWithTodos is a world of users, each signed up then given todos open todos
// ("todo 0", "todo 1", ...): nothing is deleted, so every event's aggregate stays
// visible in the read model.
func UsersWithTodos(t testing.TB, users, todos int) *World {
	w := NewWorld(t)
	for range users {
		u := w.CreateUser()
		for j := range todos {
			w.CreateTodo(u, fmt.Sprintf("todo %d", j))
		}
	}
	return w
}

// CreateUser signs up a user.
func (w *World) CreateUser() uuid.UUID {
	id := newID(w.t)
	w.seq++
	at := w.tick()
	u := event.UserData{ID: id, Email: fmt.Sprintf("user%d@example.com", w.seq), DisplayName: fmt.Sprintf("User %d", w.seq), Version: 1, CreatedAt: at, UpdatedAt: at}
	w.Users[id] = u
	w.Stats[id] = event.Stats{Version: 1}
	w.emit(event.UserCreated, id, id, 1, u)
	return id
}

// RenameUser changes a user's display name.
func (w *World) RenameUser(id uuid.UUID, name string) {
	u := w.Users[id]
	u.DisplayName, u.Version, u.UpdatedAt = name, u.Version+1, w.tick()
	w.Users[id] = u
	w.emit(event.UserUpdated, id, id, u.Version, u)
}

// CreateTodo adds a todo for owner.
func (w *World) CreateTodo(owner uuid.UUID, title string) uuid.UUID {
	id := newID(w.t)
	at := w.tick()
	notes := "notes of " + title
	td := event.TodoData{ID: id, UserID: owner, Title: title, Notes: &notes, Priority: "normal", Version: 1, CreatedAt: at, UpdatedAt: at}
	w.Todos[id] = td
	w.count(owner, 1, 0)
	w.emit(event.TodoCreated, id, owner, 1, td)
	return id
}

// SetCompleted completes or reopens a todo.
func (w *World) SetCompleted(id uuid.UUID, done bool) {
	td := w.Todos[id]
	switch {
	case done && !td.Completed:
		w.count(td.UserID, -1, 1)
	case !done && td.Completed:
		w.count(td.UserID, 1, -1)
	}
	at := w.tick()
	td.Completed, td.Version, td.UpdatedAt = done, td.Version+1, at
	td.CompletedAt = nil
	if done {
		td.CompletedAt = &at
	}
	w.Todos[id] = td
	w.emit(event.TodoUpdated, id, td.UserID, td.Version, td)
}

// DeleteTodo deletes a todo.
func (w *World) DeleteTodo(id uuid.UUID) {
	td := w.Todos[id]
	if td.Completed {
		w.count(td.UserID, 0, -1)
	} else {
		w.count(td.UserID, -1, 0)
	}
	w.deleteTodo(id)
}

func (w *World) deleteTodo(id uuid.UUID) {
	td := w.Todos[id]
	delete(w.Todos, id)
	v := td.Version + 1
	w.emit(event.TodoDeleted, id, td.UserID, v, event.Tombstone{ID: id, OwnerID: td.UserID, Version: v, DeletedAt: w.tick()})
}

// count changes the owner's counts by one write's deltas, which moves their version
// once.
func (w *World) count(owner uuid.UUID, open, completed int64) {
	st := w.Stats[owner]
	st.Open, st.Completed, st.Version = st.Open+open, st.Completed+completed, st.Version+1
	w.Stats[owner] = st
}

// DeleteUser deletes a user's todos, each with its event, then the user, in one
// write: every one of those events carries the user's last snapshot (deleted, zero
// counts, one version on).
func (w *World) DeleteUser(id uuid.UUID) {
	w.Stats[id] = event.Stats{Version: w.Stats[id].Version + 1, Deleted: true}
	for tid, td := range w.Todos {
		if td.UserID == id {
			w.deleteTodo(tid)
		}
	}
	u := w.Users[id]
	delete(w.Users, id)
	v := u.Version + 1
	w.emit(event.UserDeleted, id, id, v, event.Tombstone{ID: id, OwnerID: id, Version: v, DeletedAt: w.tick()})
}

// Snapshot is the state the read model must converge to.
func (w *World) Snapshot() drift.Snapshot {
	s := drift.NewSnapshot()
	for _, u := range w.Users {
		s.AddUser(u)
	}
	for _, td := range w.Todos {
		s.AddTodo(td)
	}
	for id, st := range w.Stats {
		s.AddStats(id, st)
	}
	return s
}

// ActiveSnapshot reads the live documents of the active read model.
func (e *Env) ActiveSnapshot() (drift.Snapshot, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	db, err := e.Store.Active(ctx)
	if err != nil {
		return drift.Snapshot{}, err
	}
	return drift.FromMongo(ctx, db)
}

// Converged is a condition for Eventually: the active read model equals w.
func (e *Env) Converged(w *World) func() (bool, string) {
	return func() (bool, string) {
		got, err := e.ActiveSnapshot()
		if err != nil {
			return false, err.Error()
		}
		diffs := drift.Compare(w.Snapshot(), got)
		if len(diffs) == 0 {
			return true, ""
		}
		return false, fmt.Sprintf("%d differences, first: %s", len(diffs), diffs[0])
	}
}

// Differences lists every difference of the read model db from the state w's writes
// left.
func Differences(ctx context.Context, w *World, db *mongo.Database) ([]drift.Difference, error) {
	got, err := drift.FromMongo(ctx, db)
	if err != nil {
		return nil, err
	}
	return drift.Compare(w.Snapshot(), got), nil
}
