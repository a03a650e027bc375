// Package seed fills the source of truth fast, for read models of a size the API would
// take minutes to write: it copies users, todos and their user_stats rows into
// PostgreSQL with COPY and copies the outbox rows of their events (in shared/outbox's
// row format, each with its owner's stats snapshot) in the same transaction, as the API
// would have. The publisher and the projector then carry them
// into the read model through the normal path, so the documents are the projector's
// own. It can also complete seeded todos the same way, for a stream of updates.
//
// The column lists here follow the API's tables (migrations); the bench, not the
// services, owns these writes, as it owns pgbench's script.
package seed

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/outbox"
	sharedpg "github.com/outboxtodo/outboxtodo/shared/postgres"
)

// trace marks the seeded events, so that their origin shows in every service's logs.
var trace = event.TraceContext{RequestID: "loadgen-seed"}

// Set is what Create wrote: every todo's state, in the order of its events.
type Set struct {
	Users []event.UserData
	Todos []event.TodoData
}

// Plan is the shape of a seeded set.
type Plan struct {
	Users   int
	PerUser int // todos per user
	// CompletedEvery makes every n-th todo of a user completed (0: none), so that
	// the stats and the leaderboard have something to rank.
	CompletedEvery int
	// UsersPerTx bounds one transaction; at least 1.
	UsersPerTx int
}

// Create writes p's users and todos, each group of UsersPerTx users in one
// transaction with the outbox rows of their user.created and todo.created events.
func Create(ctx context.Context, db sharedpg.Beginner, p Plan) (Set, error) {
	var set Set
	tag := uuid.Must(uuid.NewV7()).String()[24:]
	now := time.Now().UTC().Truncate(time.Microsecond)
	for first := 0; first < p.Users; first += max(p.UsersPerTx, 1) {
		var part Set
		for u := first; u < min(first+max(p.UsersPerTx, 1), p.Users); u++ {
			user := event.UserData{ID: uuid.Must(uuid.NewV7()), Email: fmt.Sprintf("seed-%s-%d@example.com", tag, u),
				DisplayName: fmt.Sprintf("seed %d", u), Version: 1, CreatedAt: now, UpdatedAt: now}
			part.Users = append(part.Users, user)
			for i := range p.PerUser {
				td := event.TodoData{ID: uuid.Must(uuid.NewV7()), UserID: user.ID, Title: fmt.Sprintf("seeded todo %d", i),
					Priority: "normal", Version: 1, CreatedAt: now, UpdatedAt: now}
				if p.CompletedEvery > 0 && i%p.CompletedEvery == p.CompletedEvery-1 {
					td.Completed, td.CompletedAt = true, &now
				}
				part.Todos = append(part.Todos, td)
			}
		}
		if err := sharedpg.WithTx(ctx, db, func(tx pgx.Tx) error { return part.write(ctx, tx) }); err != nil {
			return set, fmt.Errorf("seed users %d to %d: %w", first, first+len(part.Users)-1, err)
		}
		set.Users = append(set.Users, part.Users...)
		set.Todos = append(set.Todos, part.Todos...)
	}
	return set, nil
}

func (s Set) write(ctx context.Context, tx pgx.Tx) error {
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"users"}, []string{"id", "email", "display_name", "version", "created_at", "updated_at"},
		pgx.CopyFromSlice(len(s.Users), func(i int) ([]any, error) {
			u := s.Users[i]
			return []any{u.ID, u.Email, u.DisplayName, u.Version, u.CreatedAt, u.UpdatedAt}, nil
		})); err != nil {
		return fmt.Errorf("copy users: %w", err)
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"todos"},
		[]string{"id", "user_id", "title", "notes", "completed", "completed_at", "due", "priority", "version", "created_at", "updated_at"},
		pgx.CopyFromSlice(len(s.Todos), func(i int) ([]any, error) {
			t := s.Todos[i]
			return []any{t.ID, t.UserID, t.Title, t.Notes, t.Completed, t.CompletedAt, t.Due, t.Priority, t.Version, t.CreatedAt, t.UpdatedAt}, nil
		})); err != nil {
		return fmt.Errorf("copy todos: %w", err)
	}
	stats := make(map[uuid.UUID]event.Stats, len(s.Users))
	for _, u := range s.Users {
		stats[u.ID] = event.Stats{Version: 1}
	}
	for _, t := range s.Todos {
		st := stats[t.UserID]
		if t.Completed {
			st.Completed++
		} else {
			st.Open++
		}
		stats[t.UserID] = st
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"user_stats"}, []string{"user_id", "open", "completed", "version"},
		pgx.CopyFromSlice(len(s.Users), func(i int) ([]any, error) {
			st := stats[s.Users[i].ID]
			return []any{s.Users[i].ID, st.Open, st.Completed, st.Version}, nil
		})); err != nil {
		return fmt.Errorf("copy user_stats: %w", err)
	}
	events := make([]event.Envelope, 0, len(s.Users)+len(s.Todos))
	for _, u := range s.Users {
		e, err := event.New(event.UserCreated, u.ID, u.ID, u.Version, u.CreatedAt, trace, u)
		if err != nil {
			return err
		}
		events = append(events, e)
	}
	for _, t := range s.Todos {
		e, err := event.New(event.TodoCreated, t.ID, t.UserID, t.Version, t.CreatedAt, trace, t)
		if err != nil {
			return err
		}
		events = append(events, e)
	}
	return copyOutbox(ctx, tx, events, stats)
}

// copyOutbox copies the outbox rows of events, each with its owner's snapshot of
// stats, which the API's insert reads from the owner's user_stats row as the
// transaction left it.
func copyOutbox(ctx context.Context, tx pgx.Tx, events []event.Envelope, stats map[uuid.UUID]event.Stats) error {
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{outbox.Table}, outbox.Columns, pgx.CopyFromSlice(len(events), func(i int) ([]any, error) {
		e := events[i]
		if st, ok := stats[e.OwnerID]; ok {
			e.Stats = &st
		}
		return outbox.Row(e)
	})); err != nil {
		return fmt.Errorf("copy outbox: %w", err)
	}
	return nil
}

// Complete marks up to n open todos of set completed (the first ones in set's order),
// with their owners' user_stats and their todo.updated events, in one transaction; set
// keeps the new states. It returns how many it completed.
func Complete(ctx context.Context, db sharedpg.Beginner, set *Set, n int) (int, error) {
	now := time.Now().UTC().Truncate(time.Microsecond)
	var (
		picked []int
		events []event.Envelope
	)
	for i, t := range set.Todos {
		if len(picked) == n {
			break
		}
		if t.Completed {
			continue
		}
		t.Completed, t.CompletedAt, t.Version, t.UpdatedAt = true, &now, t.Version+1, now
		e, err := event.New(event.TodoUpdated, t.ID, t.UserID, t.Version, now, trace, t)
		if err != nil {
			return 0, err
		}
		picked = append(picked, i)
		events = append(events, e)
	}
	ids := make([]uuid.UUID, len(picked))
	for k, i := range picked {
		ids[k] = set.Todos[i].ID
	}
	err := sharedpg.WithTx(ctx, db, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE todos SET completed = true, completed_at = $2, version = version + 1, updated_at = $2
WHERE id = ANY($1) AND NOT completed`, ids, now)
		if err != nil {
			return fmt.Errorf("complete todos: %w", err)
		}
		if tag.RowsAffected() != int64(len(ids)) {
			return fmt.Errorf("complete todos: %d of %d were open", tag.RowsAffected(), len(ids))
		}
		rows, err := tx.Query(ctx, `
UPDATE user_stats s SET open = s.open - c.n, completed = s.completed + c.n, version = s.version + 1
FROM (SELECT user_id, count(*) AS n FROM todos WHERE id = ANY($1) GROUP BY user_id) c
WHERE s.user_id = c.user_id
RETURNING s.user_id, s.open, s.completed, s.version, s.deleted`, ids)
		if err != nil {
			return fmt.Errorf("update user_stats: %w", err)
		}
		stats := map[uuid.UUID]event.Stats{}
		var (
			owner uuid.UUID
			st    event.Stats
		)
		if _, err := pgx.ForEachRow(rows, []any{&owner, &st.Open, &st.Completed, &st.Version, &st.Deleted}, func() error {
			stats[owner] = st
			return nil
		}); err != nil {
			return fmt.Errorf("update user_stats: %w", err)
		}
		return copyOutbox(ctx, tx, events, stats)
	})
	if err != nil {
		return 0, err
	}
	for _, i := range picked {
		t := &set.Todos[i]
		t.Completed, t.CompletedAt, t.Version, t.UpdatedAt = true, &now, t.Version+1, now
	}
	return len(picked), nil
}
