// Package verify compares the source of truth (PostgreSQL) with the read model
// (MongoDB) document by document: users, todos and per-user stats (from which the
// leaderboard is sorted). Users and todos are compared as live documents, so their
// tombstones never count as documents; stats are compared row by row with user_stats,
// deleted users' last snapshots included: counts, version and deleted.
//
// Times are compared at millisecond precision, the precision of BSON dates.
package verify

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/postgres"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
)

// Snapshot is the live state of one side.
type Snapshot struct {
	Users map[string]readmodel.User
	Todos map[string]readmodel.Todo
	// Stats has one entry per user_stats row, deleted users' included; UpdatedAt is
	// not compared.
	Stats map[string]readmodel.Stats
}

// Difference is one mismatch.
type Difference struct {
	Collection string // users, todos or user_stats
	ID         string
	Kind       string // missing (in MongoDB), extra (in MongoDB), differs
	Detail     string
}

func (d Difference) String() string {
	if d.Detail == "" {
		return fmt.Sprintf("%s %s: %s", d.Collection, d.ID, d.Kind)
	}
	return fmt.Sprintf("%s %s: %s: %s", d.Collection, d.ID, d.Kind, d.Detail)
}

// Run loads both sides and compares them. It reads PostgreSQL in one read-only
// REPEATABLE READ transaction (one snapshot for users, todos and stats); run it after
// writes stop, or differences still in flight through the pipeline show as drift.
func Run(ctx context.Context, pool *pgxpool.Pool, readModel *mongo.Database) ([]Difference, error) {
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }() // read-only: nothing to keep
	want, err := FromPostgres(ctx, tx)
	if err != nil {
		return nil, err
	}
	got, err := FromMongo(ctx, readModel)
	if err != nil {
		return nil, err
	}
	return Compare(want, got), nil
}

// FromPostgres loads the source of truth; give it a REPEATABLE READ transaction so
// that the tables agree with each other.
func FromPostgres(ctx context.Context, db postgres.DBTX) (Snapshot, error) {
	s := Snapshot{Users: map[string]readmodel.User{}, Todos: map[string]readmodel.Todo{}, Stats: map[string]readmodel.Stats{}}
	rows, err := db.Query(ctx, `SELECT id, email, display_name, version, created_at, updated_at FROM users`)
	if err != nil {
		return s, fmt.Errorf("read users: %w", err)
	}
	for rows.Next() {
		var (
			id uuid.UUID
			u  readmodel.User
		)
		if err := rows.Scan(&id, &u.Email, &u.DisplayName, &u.Version, &u.CreatedAt, &u.UpdatedAt); err != nil {
			rows.Close()
			return s, fmt.Errorf("read users: %w", err)
		}
		u.ID = id.String()
		s.Users[u.ID] = normUser(u)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return s, fmt.Errorf("read users: %w", err)
	}
	rows, err = db.Query(ctx, `SELECT id, user_id, title, notes, completed, completed_at, due, priority, version, created_at, updated_at FROM todos`)
	if err != nil {
		return s, fmt.Errorf("read todos: %w", err)
	}
	for rows.Next() {
		var (
			id, owner uuid.UUID
			t         readmodel.Todo
		)
		if err := rows.Scan(&id, &owner, &t.Title, &t.Notes, &t.Completed, &t.CompletedAt, &t.Due, &t.Priority, &t.Version, &t.CreatedAt, &t.UpdatedAt); err != nil {
			rows.Close()
			return s, fmt.Errorf("read todos: %w", err)
		}
		t.ID, t.UserID = id.String(), owner.String()
		s.Todos[t.ID] = normTodo(t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return s, fmt.Errorf("read todos: %w", err)
	}
	rows, err = db.Query(ctx, `SELECT user_id, open, completed, version, deleted FROM user_stats`)
	if err != nil {
		return s, fmt.Errorf("read user_stats: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id uuid.UUID
			st event.Stats
		)
		if err := rows.Scan(&id, &st.Open, &st.Completed, &st.Version, &st.Deleted); err != nil {
			return s, fmt.Errorf("read user_stats: %w", err)
		}
		s.Stats[id.String()] = readmodel.StatsOf(id.String(), st, time.Time{})
	}
	if err := rows.Err(); err != nil {
		return s, fmt.Errorf("read user_stats: %w", err)
	}
	return s, nil
}

// FromMongo loads the live documents of a read-model database.
func FromMongo(ctx context.Context, db *mongo.Database) (Snapshot, error) {
	s := Snapshot{Users: map[string]readmodel.User{}, Todos: map[string]readmodel.Todo{}, Stats: map[string]readmodel.Stats{}}
	live := bson.D{readmodel.NotDeleted}
	var users []readmodel.User
	if err := findAll(ctx, db.Collection(readmodel.CollUsers), live, &users); err != nil {
		return s, err
	}
	for _, u := range users {
		s.Users[u.ID] = normUser(u)
	}
	var todos []readmodel.Todo
	if err := findAll(ctx, db.Collection(readmodel.CollTodos), live, &todos); err != nil {
		return s, err
	}
	for _, t := range todos {
		s.Todos[t.ID] = normTodo(t)
	}
	var stats []readmodel.Stats
	if err := findAll(ctx, db.Collection(readmodel.CollStats), bson.D{}, &stats); err != nil {
		return s, err
	}
	for _, st := range stats {
		if st.Deleted && st.Version == 0 {
			// The tombstone of a user deleted before stats carried versions: user_stats
			// has no row for it and nothing rewrites it, and no reader shows it.
			continue
		}
		s.Stats[st.UserID] = normStats(st)
	}
	return s, nil
}

func findAll(ctx context.Context, coll *mongo.Collection, filter bson.D, out any) error {
	cur, err := coll.Find(ctx, filter)
	if err != nil {
		return fmt.Errorf("read %s: %w", coll.Name(), err)
	}
	if err := cur.All(ctx, out); err != nil {
		return fmt.Errorf("read %s: %w", coll.Name(), err)
	}
	return nil
}

// Compare lists every difference of got (the read model) from want (the source of
// truth), sorted by collection and id.
func Compare(want, got Snapshot) []Difference {
	var diffs []Difference
	diffs = append(diffs, compare(readmodel.CollUsers, want.Users, got.Users, describeUser)...)
	diffs = append(diffs, compare(readmodel.CollTodos, want.Todos, got.Todos, describeTodo)...)
	diffs = append(diffs, compare(readmodel.CollStats, want.Stats, got.Stats, describeStats)...)
	return diffs
}

func compare[T any](coll string, want, got map[string]T, describe func(T) string) []Difference {
	var diffs []Difference
	for _, id := range slices.Sorted(maps.Keys(want)) {
		g, ok := got[id]
		if !ok {
			diffs = append(diffs, Difference{Collection: coll, ID: id, Kind: "missing"})
			continue
		}
		if w, gd := describe(want[id]), describe(g); w != gd {
			diffs = append(diffs, Difference{Collection: coll, ID: id, Kind: "differs", Detail: fmt.Sprintf("want %s, got %s", w, gd)})
		}
	}
	for _, id := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[id]; !ok {
			diffs = append(diffs, Difference{Collection: coll, ID: id, Kind: "extra"})
		}
	}
	return diffs
}

func describeUser(u readmodel.User) string {
	return fmt.Sprintf("{email:%q display_name:%q version:%d created_at:%s updated_at:%s}",
		u.Email, u.DisplayName, u.Version, ts(u.CreatedAt), ts(u.UpdatedAt))
}

func describeTodo(t readmodel.Todo) string {
	var b strings.Builder
	fmt.Fprintf(&b, "{user_id:%s title:%q notes:", t.UserID, t.Title)
	if t.Notes == nil {
		b.WriteString("null")
	} else {
		fmt.Fprintf(&b, "%q", *t.Notes)
	}
	fmt.Fprintf(&b, " completed:%t completed_at:%s due:%s priority:%s version:%d created_at:%s updated_at:%s}",
		t.Completed, tsp(t.CompletedAt), tsp(t.Due), t.Priority, t.Version, ts(t.CreatedAt), ts(t.UpdatedAt))
	return b.String()
}

func describeStats(s readmodel.Stats) string {
	return fmt.Sprintf("{open:%d completed:%d total:%d version:%d deleted:%t}", s.Open, s.Completed, s.Total, s.Version, s.Deleted)
}

func ts(t time.Time) string { return t.UTC().Truncate(time.Millisecond).Format(time.RFC3339Nano) }

func tsp(t *time.Time) string {
	if t == nil {
		return "null"
	}
	return ts(*t)
}

func normUser(u readmodel.User) readmodel.User {
	u.ProjectedAt = time.Time{}
	u.CreatedAt, u.UpdatedAt = u.CreatedAt.UTC().Truncate(time.Millisecond), u.UpdatedAt.UTC().Truncate(time.Millisecond)
	return u
}

func normTodo(t readmodel.Todo) readmodel.Todo {
	t.ProjectedAt = time.Time{}
	t.CreatedAt, t.UpdatedAt = t.CreatedAt.UTC().Truncate(time.Millisecond), t.UpdatedAt.UTC().Truncate(time.Millisecond)
	return t
}

func normStats(s readmodel.Stats) readmodel.Stats {
	s.UpdatedAt = time.Time{}
	return s
}
