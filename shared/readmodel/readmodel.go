// Package readmodel is the contract of the MongoDB read model between the projector,
// which writes it, and the API, which reads it: database and collection names, the
// documents with their bson fields, the filters and the sort both sides rely on, the
// indexes that serve them, and the lookup of the active database. Each service keeps
// its own queries: the API its reads, the projector its writes and operations.
//
// Layout. A control database (the configured name, DefaultDatabase unless set) holds
// the pointer document naming the active read-model database and the dead letters. The
// active database holds users, todos, user_stats and the projection watermark. Without a
// pointer the control database is itself the active one; a rebuild fills a fresh
// database and flips the pointer (see Pointer).
//
// Deletes are tombstones (Deleted true, with the version of the delete) so that a late
// redelivery of an older event cannot bring a document back; readers filter them out
// (NotDeleted, LiveStats).
//
// Ids are UUID strings; times are BSON dates, so they carry milliseconds (PostgreSQL
// keeps microseconds: compare truncated to the millisecond).
package readmodel

import (
	"time"

	"github.com/outboxtodo/outboxtodo/shared/event"
)

// DefaultDatabase is the control database when none is configured.
const DefaultDatabase = "todo_read"

// Collection names.
const (
	// In the active read-model database.
	CollUsers      = "users"
	CollTodos      = "todos"
	CollStats      = "user_stats"
	CollProjection = "projection"
	// In the control database.
	CollPointer     = "read_model"
	CollDeadLetters = "dead_letters"
)

// Fixed document ids.
const (
	WatermarkID = "watermark" // in CollProjection
	PointerID   = "active"    // in CollPointer
)

// User is a user's document. A tombstone keeps only ID, Version, Deleted and DeletedAt.
type User struct {
	ID          string     `bson:"_id"`
	Email       string     `bson:"email,omitempty"`
	DisplayName string     `bson:"display_name,omitempty"`
	Version     int64      `bson:"version"`
	CreatedAt   time.Time  `bson:"created_at,omitzero"`
	UpdatedAt   time.Time  `bson:"updated_at,omitzero"`
	Deleted     bool       `bson:"deleted,omitempty"`
	DeletedAt   *time.Time `bson:"deleted_at,omitempty"`
	// ProjectedAt is when the projector wrote this version: minus UpdatedAt, the sync
	// lag of the change. Not part of the source's state.
	ProjectedAt time.Time `bson:"projected_at,omitzero"`
}

// Todo is a todo's document. A tombstone keeps only ID, UserID, Version, Deleted and
// DeletedAt: the owner stays so that an operator can find a user's deleted todos.
type Todo struct {
	ID     string `bson:"_id"`
	UserID string `bson:"user_id"`
	Title  string `bson:"title,omitempty"`
	// Optional fields are stored as null when empty (not left out), so that a $set of a
	// newer state clears them.
	Notes       *string    `bson:"notes"`
	Completed   bool       `bson:"completed"`
	CompletedAt *time.Time `bson:"completed_at"`
	Due         *time.Time `bson:"due"`
	Priority    string     `bson:"priority,omitempty"`
	Version     int64      `bson:"version"`
	CreatedAt   time.Time  `bson:"created_at,omitzero"`
	UpdatedAt   time.Time  `bson:"updated_at,omitzero"`
	Deleted     bool       `bson:"deleted,omitempty"`
	DeletedAt   *time.Time `bson:"deleted_at,omitempty"`
	// ProjectedAt: see User.
	ProjectedAt time.Time `bson:"projected_at,omitzero"`
}

// Stats are one user's todo counts, a copy of the source's snapshot that every event
// of the user carries (event.Stats): never counted or incremented here.
//
// Version is the snapshot's version and guards the write like a user's or a todo's
// version does. Deleted is always stored, false or true, so that the leaderboard
// selects live users by equality (an index on real MongoDB can serve `deleted: false`,
// not `$ne: true`); the stats of a deleted user stay as its tombstone, with zero counts.
//
// Documents written before stats carried versions hold source_version instead of
// version and omit deleted when false; the projector's guard accepts them as older than
// any snapshot (see docs/ARCHITECTURE.md for the upgrade).
type Stats struct {
	UserID    string    `bson:"_id"`
	Open      int64     `bson:"open"`
	Completed int64     `bson:"completed"`
	Total     int64     `bson:"total"`
	Version   int64     `bson:"version"`
	Deleted   bool      `bson:"deleted"`
	UpdatedAt time.Time `bson:"updated_at"`
}

// StatsOf is the stats document of a user's snapshot, written at updatedAt.
func StatsOf(userID string, s event.Stats, updatedAt time.Time) Stats {
	return Stats{UserID: userID, Open: s.Open, Completed: s.Completed, Total: s.Total(), Version: s.Version, Deleted: s.Deleted,
		UpdatedAt: updatedAt}
}

// Watermark is how far the projection has got: the highest stream sequence applied
// and when. With several projector replicas a lower sequence may still be in flight on
// another replica, so it bounds freshness from above, it does not prove completeness.
type Watermark struct {
	ID         string    `bson:"_id"`
	StreamSeq  uint64    `bson:"stream_seq"`
	AppliedAt  time.Time `bson:"applied_at"`
	OccurredAt time.Time `bson:"occurred_at"` // of the event at StreamSeq
}

// Lag is the time between the commit of the newest applied event and now.
func (w Watermark) Lag(now time.Time) time.Duration { return now.Sub(w.OccurredAt) }

// Pointer names the active read-model database. A rebuild fills a fresh database and
// then replaces this document; readers look it up per request (one small document),
// so they switch without a restart.
type Pointer struct {
	ID         string    `bson:"_id"`
	Database   string    `bson:"database"`
	SwitchedAt time.Time `bson:"switched_at"`
}

// DeadLetter is a message the projector could not apply: the raw message as it was in
// the stream, where it was, and why it failed. RedrivenAt is set once an operator's
// redrive has applied it; counted dead letters are those without it.
type DeadLetter struct {
	ID           string              `bson:"_id"` // "<stream>:<stream_seq>"
	Stream       string              `bson:"stream"`
	StreamSeq    uint64              `bson:"stream_seq"`
	Subject      string              `bson:"subject"`
	Headers      map[string][]string `bson:"headers,omitempty"`
	Data         []byte              `bson:"data"`
	Error        string              `bson:"error"`
	Deliveries   uint64              `bson:"deliveries"`
	DeadAt       time.Time           `bson:"dead_at"`
	RedrivenAt   *time.Time          `bson:"redriven_at,omitempty"`
	RedriveCount int                 `bson:"redrive_count,omitempty"`
}
