// Package drift compares what a read model must show with what it shows, document by
// document: users, todos and per-user stats (from which the leaderboard is sorted).
// Users and todos are compared as live documents, so their tombstones never count as
// documents; stats are compared as the rows of user_stats are, deleted users' last
// snapshots included: counts, version and deleted. Times are compared at millisecond
// precision, the precision of BSON dates.
//
// The API's verify tool builds the wanted Snapshot from PostgreSQL; the projector's
// tests build it from the writes they play. Like the rest of shared, it makes no
// compatibility promises outside this repository.
package drift

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
)

// Snapshot is the live documents of one side, by id.
type Snapshot struct {
	Users map[string]readmodel.User
	Todos map[string]readmodel.Todo
	// Stats has one entry per user_stats row, deleted users' included; UpdatedAt is
	// not compared.
	Stats map[string]readmodel.Stats
}

// NewSnapshot returns an empty snapshot.
func NewSnapshot() Snapshot {
	return Snapshot{Users: map[string]readmodel.User{}, Todos: map[string]readmodel.Todo{}, Stats: map[string]readmodel.Stats{}}
}

// AddUser adds the document the read model must hold for a live user whose state is u.
func (s Snapshot) AddUser(u event.UserData) {
	s.Users[u.ID.String()] = normUser(readmodel.User{ID: u.ID.String(), Email: u.Email, DisplayName: u.DisplayName,
		Version: u.Version, CreatedAt: u.CreatedAt, UpdatedAt: u.UpdatedAt})
}

// AddTodo adds the document the read model must hold for a live todo whose state is t.
func (s Snapshot) AddTodo(t event.TodoData) {
	s.Todos[t.ID.String()] = normTodo(readmodel.Todo{ID: t.ID.String(), UserID: t.UserID.String(), Title: t.Title,
		Notes: t.Notes, Completed: t.Completed, CompletedAt: t.CompletedAt, Due: t.Due, Priority: t.Priority,
		Version: t.Version, CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt})
}

// AddStats adds the stats document the read model must hold for owner's row of
// user_stats.
func (s Snapshot) AddStats(owner uuid.UUID, st event.Stats) {
	s.Stats[owner.String()] = readmodel.StatsOf(owner.String(), st, time.Time{})
}

// Difference is one mismatch.
type Difference struct {
	Collection string // users, todos or user_stats
	ID         string
	Kind       string // missing (in the read model), extra (in the read model), differs
	Detail     string
}

func (d Difference) String() string {
	if d.Detail == "" {
		return fmt.Sprintf("%s %s: %s", d.Collection, d.ID, d.Kind)
	}
	return fmt.Sprintf("%s %s: %s: %s", d.Collection, d.ID, d.Kind, d.Detail)
}

// FromMongo loads the live documents of a read-model database.
func FromMongo(ctx context.Context, db *mongo.Database) (Snapshot, error) {
	s := NewSnapshot()
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

func ts(t time.Time) string { return ms(t).Format(time.RFC3339Nano) }

func tsp(t *time.Time) string {
	if t == nil {
		return "null"
	}
	return ts(*t)
}

func ms(t time.Time) time.Time { return t.UTC().Truncate(time.Millisecond) }

func msp(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := ms(*t)
	return &u
}

func normUser(u readmodel.User) readmodel.User {
	u.ProjectedAt = time.Time{}
	u.CreatedAt, u.UpdatedAt = ms(u.CreatedAt), ms(u.UpdatedAt)
	return u
}

func normTodo(t readmodel.Todo) readmodel.Todo {
	t.ProjectedAt = time.Time{}
	t.CreatedAt, t.UpdatedAt = ms(t.CreatedAt), ms(t.UpdatedAt)
	t.CompletedAt, t.Due = msp(t.CompletedAt), msp(t.Due)
	return t
}

func normStats(s readmodel.Stats) readmodel.Stats {
	s.UpdatedAt = time.Time{}
	return s
}
