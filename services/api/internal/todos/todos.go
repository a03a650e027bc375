// Package todos is the todo aggregate: its state, the rules for creating and patching
// one, list filters, and the errors the store reports about todos.
package todos

import (
	"errors"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/outboxtodo/outboxtodo/services/api/internal/input"
	"github.com/outboxtodo/outboxtodo/shared/event"
)

// Limits of the text fields, in characters (runes).
const (
	MaxTitleLen = 200
	MaxNotesLen = 10000
)

// Errors reported by the store.
var (
	// ErrNotFound is also the answer for another user's todo, so that ids of other
	// users' todos cannot be probed.
	ErrNotFound = errors.New("todo not found")
	// ErrVersionMismatch means the caller's expected version (If-Match) is stale.
	ErrVersionMismatch = errors.New("todo version does not match")
	// ErrTooMany means the owner holds the most todos a user may have.
	ErrTooMany = errors.New("too many todos")
)

// DefaultMaxPerUser bounds the todos of one user unless configured otherwise, so that
// deleting a user stays one bounded transaction.
const DefaultMaxPerUser = 10000

// Priority of a todo.
type Priority string

// Priorities.
const (
	Low    Priority = "low"
	Normal Priority = "normal"
	High   Priority = "high"
)

// Valid reports whether p is one of the priorities.
func (p Priority) Valid() bool { return p == Low || p == Normal || p == High }

// Precision is the resolution of timestamps in the database. Every time the API
// stores is truncated to it first, so the state it answers is the state it stored.
const Precision = time.Microsecond

// Todo is the state of one todo.
type Todo struct {
	ID          uuid.UUID  `json:"id"`
	UserID      uuid.UUID  `json:"user_id"`
	Title       string     `json:"title"`
	Notes       *string    `json:"notes"`
	Completed   bool       `json:"completed"`
	CompletedAt *time.Time `json:"completed_at"`
	Due         *time.Time `json:"due"`
	Priority    Priority   `json:"priority"`
	Version     int64      `json:"version"`
	CreatedAt   time.Time  `json:"created_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
}

// Data is the event payload of t.
func (t Todo) Data() event.TodoData {
	return event.TodoData{
		ID: t.ID, UserID: t.UserID, Title: t.Title, Notes: t.Notes, Completed: t.Completed,
		CompletedAt: t.CompletedAt, Due: t.Due, Priority: string(t.Priority), Version: t.Version,
		CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt,
	}
}

// New is a validated request to create a todo.
type New struct {
	Title     string
	Notes     *string
	Completed bool
	Due       *time.Time
	Priority  Priority
}

// Todo returns the new todo of owner at version 1, created at now (already truncated
// to Precision).
func (n New) Todo(id, owner uuid.UUID, now time.Time) Todo {
	t := Todo{
		ID: id, UserID: owner, Title: n.Title, Notes: n.Notes, Completed: n.Completed,
		Due: n.Due, Priority: n.Priority, Version: 1, CreatedAt: now, UpdatedAt: now,
	}
	if t.Completed {
		t.CompletedAt = &now
	}
	return t
}

type body struct {
	Title     input.Field[string] `json:"title"`
	Notes     input.Field[string] `json:"notes"`
	Completed input.Field[bool]   `json:"completed"`
	Due       input.Field[string] `json:"due"`
	Priority  input.Field[string] `json:"priority"`
}

// ParseNew parses a create body, reporting every invalid field. Priority defaults to
// normal; notes, due and completed are optional.
func ParseNew(b []byte) (New, error) {
	return input.Parse(b, func(in body, errs *input.Errors) New {
		n := New{Priority: Normal}
		in.Title.Value = strings.TrimSpace(in.Title.Value)
		if errs.Text("/title", in.Title, 1, MaxTitleLen, false) {
			n.Title = in.Title.Value
		}
		if errs.Text("/notes", in.Notes, 0, MaxNotesLen, true) {
			n.Notes = &in.Notes.Value
		}
		if in.Completed.Present {
			if v, ok := parseBool(errs, "/completed", in.Completed); ok {
				n.Completed = v
			}
		}
		if in.Due.Present {
			n.Due, _ = parseDue(errs, in.Due)
		}
		if in.Priority.Present {
			if p, ok := parsePriority(errs, in.Priority); ok {
				n.Priority = p
			}
		}
		return n
	})
}

// Patch is a validated JSON merge patch (RFC 7396) of a todo. A nil pointer leaves a
// field unchanged; SetNotes and SetDue with a nil value clear it.
type Patch struct {
	Title     *string
	SetNotes  bool
	Notes     *string
	Completed *bool
	SetDue    bool
	Due       *time.Time
	Priority  *Priority
}

// ParsePatch parses a merge patch, reporting every invalid field. null clears notes
// and due; it is invalid for the other fields, which always have a value.
func ParsePatch(b []byte) (Patch, error) {
	return input.Parse(b, func(in body, errs *input.Errors) Patch {
		var p Patch
		if in.Title.Null {
			errs.Add("/title", "must not be null")
		} else if in.Title.Present {
			in.Title.Value = strings.TrimSpace(in.Title.Value)
			if errs.Text("/title", in.Title, 1, MaxTitleLen, false) {
				p.Title = &in.Title.Value
			}
		}
		if in.Notes.Present {
			p.SetNotes = in.Notes.Null
			if errs.Text("/notes", in.Notes, 0, MaxNotesLen, true) {
				p.SetNotes, p.Notes = true, &in.Notes.Value
			}
		}
		if in.Completed.Present {
			if v, ok := parseBool(errs, "/completed", in.Completed); ok {
				p.Completed = &v
			}
		}
		if in.Due.Present {
			d, ok := parseDue(errs, in.Due)
			p.SetDue, p.Due = ok, d
		}
		if in.Priority.Present {
			if v, ok := parsePriority(errs, in.Priority); ok {
				p.Priority = &v
			}
		}
		return p
	})
}

// Apply returns t changed by p at now (truncated to Precision) with its version
// bumped. completed_at follows completed: set when it becomes true, cleared when it
// becomes false, kept when it stays true.
func (t Todo) Apply(p Patch, now time.Time) Todo {
	if p.Title != nil {
		t.Title = *p.Title
	}
	if p.SetNotes {
		t.Notes = p.Notes
	}
	if p.SetDue {
		t.Due = p.Due
	}
	if p.Priority != nil {
		t.Priority = *p.Priority
	}
	if p.Completed != nil && *p.Completed != t.Completed {
		t.Completed = *p.Completed
		t.CompletedAt = nil
		if t.Completed {
			t.CompletedAt = &now
		}
	}
	t.Version++
	t.UpdatedAt = now
	return t
}

// Filter narrows a list of one user's todos. Nil members do not filter.
type Filter struct {
	Completed *bool
	DueBefore *time.Time
	DueAfter  *time.Time
	// UpdatedSince keeps the todos updated at or after it, for clients that sync
	// incrementally (deletions are not listed: a deleted todo is gone).
	UpdatedSince *time.Time
}

func parseBool(errs *input.Errors, ptr string, f input.Field[bool]) (bool, bool) {
	if f.Invalid || f.Null {
		errs.Add(ptr, "must be true or false")
		return false, false
	}
	return f.Value, true
}

func parsePriority(errs *input.Errors, f input.Field[string]) (Priority, bool) {
	p := Priority(f.Value)
	if f.Invalid || f.Null || !p.Valid() {
		errs.Add("/priority", "must be one of low, normal, high")
		return "", false
	}
	return p, true
}

// parseDue returns the due time of a present field: nil for null (ok, it clears),
// or the parsed time; ok is false when the value is invalid.
func parseDue(errs *input.Errors, f input.Field[string]) (*time.Time, bool) {
	if f.Null {
		return nil, true
	}
	t, err := ParseTime(f.Value)
	if f.Invalid || err != nil {
		errs.Add("/due", "must be an RFC 3339 date-time such as 2030-01-02T15:04:05Z, or null")
		return nil, false
	}
	return &t, true
}

// ParseTime parses an RFC 3339 timestamp into UTC at Precision.
func ParseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, err
	}
	return t.UTC().Truncate(Precision), nil
}
