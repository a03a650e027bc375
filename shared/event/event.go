// Package event defines the event envelope that travels from the outbox through
// JetStream to the read model, its JSON encoding and the subject scheme.
//
// An envelope carries the full state of its aggregate after the change (or a tombstone
// for a delete) together with the aggregate's new version, so a consumer can apply any
// event on its own, in any order, and keep only the newest state.
package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// SchemaVersion is the envelope schema this code writes and the newest it reads.
// Adding optional fields keeps the version; changing the meaning of a field bumps it.
const SchemaVersion = 1

// Aggregate types.
const (
	AggregateUser = "user"
	AggregateTodo = "todo"
)

// Event types: "<aggregate>.<change>".
const (
	UserCreated = "user.created"
	UserUpdated = "user.updated"
	UserDeleted = "user.deleted"
	TodoCreated = "todo.created"
	TodoUpdated = "todo.updated"
	TodoDeleted = "todo.deleted"
)

var aggregateOf = map[string]string{
	UserCreated: AggregateUser,
	UserUpdated: AggregateUser,
	UserDeleted: AggregateUser,
	TodoCreated: AggregateTodo,
	TodoUpdated: AggregateTodo,
	TodoDeleted: AggregateTodo,
}

// IsDelete reports whether events of type t carry a tombstone instead of a state.
func IsDelete(t string) bool { return t == UserDeleted || t == TodoDeleted }

// Errors returned by Decode and Validate. Consumers dead-letter events that fail with
// any of them: redelivering the same bytes cannot succeed.
var (
	ErrMalformed          = errors.New("malformed event")
	ErrUnsupportedVersion = errors.New("unsupported event schema version")
	ErrInvalid            = errors.New("invalid event")
)

// Envelope is one event. Data holds the aggregate's full state after the change
// (UserData or TodoData) or, for a delete, a Tombstone. Stats is the owner's todo
// counts after the change, with their own version: the read model keeps per-user stats
// by a version-guarded write of the newest snapshot, never by counting or incrementing.
type Envelope struct {
	ID            uuid.UUID       `json:"id"`
	Type          string          `json:"type"`
	SchemaVersion int             `json:"schema_version"`
	AggregateType string          `json:"aggregate_type"`
	AggregateID   uuid.UUID       `json:"aggregate_id"`
	Version       int64           `json:"version"`
	OwnerID       uuid.UUID       `json:"owner_id"`
	OccurredAt    time.Time       `json:"occurred_at"`
	Trace         TraceContext    `json:"trace,omitzero"`
	Data          json.RawMessage `json:"data"`
	// Stats is set by the outbox insert from the owner's row of user_stats, in the
	// transaction of the change (see package outbox); events written before that
	// existed carry none.
	Stats *Stats `json:"stats,omitempty"`
}

// Stats is a snapshot of one user's todo counts. The source of truth keeps them in the
// same transaction as every todo write and bumps Version whenever a count changes, so
// the read model can apply snapshots in any order and keep the newest. Deleted is set
// once the user is deleted: that snapshot's counts are zero and it is the last one.
type Stats struct {
	Open      int64 `json:"open"`
	Completed int64 `json:"completed"`
	Version   int64 `json:"version"`
	Deleted   bool  `json:"deleted,omitempty"`
}

// Total is the number of the user's todos.
func (s Stats) Total() int64 { return s.Open + s.Completed }

// TraceContext carries the W3C trace context and the request id of the write that
// produced the event, so one request can be followed across all services.
type TraceContext struct {
	TraceParent string `json:"traceparent,omitempty"`
	TraceState  string `json:"tracestate,omitempty"`
	RequestID   string `json:"request_id,omitempty"`
}

// UserData is the state of a user after a change.
type UserData struct {
	ID          uuid.UUID `json:"id"`
	Email       string    `json:"email"`
	DisplayName string    `json:"display_name"`
	Version     int64     `json:"version"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// TodoData is the state of a todo after a change.
type TodoData struct {
	ID          uuid.UUID  `json:"id"`
	UserID      uuid.UUID  `json:"user_id"`
	Title       string     `json:"title"`
	Notes       *string    `json:"notes"`
	Completed   bool       `json:"completed"`
	CompletedAt *time.Time `json:"completed_at"`
	Due         *time.Time `json:"due"`
	Priority    string     `json:"priority"`
	Version     int64      `json:"version"`
	CreatedAt   time.Time  `json:"created_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
}

// Tombstone is the data of a delete event: the aggregate is gone as of Version.
type Tombstone struct {
	ID        uuid.UUID `json:"id"`
	OwnerID   uuid.UUID `json:"owner_id"`
	Version   int64     `json:"version"`
	DeletedAt time.Time `json:"deleted_at"`
}

// NewTombstone builds the delete event (eventType UserDeleted or TodoDeleted) that
// leaves version as the aggregate's last, deleted at now.
func NewTombstone(eventType string, id, owner uuid.UUID, version int64, now time.Time, trace TraceContext) (Envelope, error) {
	return New(eventType, id, owner, version, now, trace, Tombstone{ID: id, OwnerID: owner, Version: version, DeletedAt: now})
}

// New builds an envelope for a change of an aggregate, encoding data (a UserData,
// TodoData or Tombstone) as its payload. The event id is a fresh UUIDv7.
func New(eventType string, aggregateID, ownerID uuid.UUID, version int64, occurredAt time.Time, trace TraceContext, data any) (Envelope, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return Envelope{}, fmt.Errorf("new event id: %w", err)
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return Envelope{}, fmt.Errorf("encode %s data: %w", eventType, err)
	}
	e := Envelope{
		ID:            id,
		Type:          eventType,
		SchemaVersion: SchemaVersion,
		AggregateType: aggregateOf[eventType],
		AggregateID:   aggregateID,
		Version:       version,
		OwnerID:       ownerID,
		OccurredAt:    occurredAt.UTC(),
		Trace:         trace,
		Data:          raw,
	}
	if err := e.Validate(); err != nil {
		return Envelope{}, err
	}
	return e, nil
}

// Encode returns the JSON wire form of e.
func (e Envelope) Encode() ([]byte, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encode event %s: %w", e.ID, err)
	}
	return b, nil
}

// Decode parses and validates the wire form of an event. Unknown fields are ignored so
// that a newer producer may add optional fields without a schema bump; a schema version
// newer than SchemaVersion fails with ErrUnsupportedVersion.
func Decode(b []byte) (Envelope, error) {
	var e Envelope
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&e); err != nil {
		return Envelope{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if dec.More() {
		return Envelope{}, fmt.Errorf("%w: trailing data after the envelope", ErrMalformed)
	}
	if err := e.Validate(); err != nil {
		return Envelope{}, err
	}
	return e, nil
}

// Validate checks the envelope's invariants.
func (e Envelope) Validate() error {
	switch {
	case e.SchemaVersion < 1:
		return fmt.Errorf("%w: schema_version %d", ErrInvalid, e.SchemaVersion)
	case e.SchemaVersion > SchemaVersion:
		return fmt.Errorf("%w: %d (this build reads up to %d)", ErrUnsupportedVersion, e.SchemaVersion, SchemaVersion)
	case e.ID == uuid.Nil:
		return fmt.Errorf("%w: missing id", ErrInvalid)
	case aggregateOf[e.Type] == "":
		return fmt.Errorf("%w: unknown type %q", ErrInvalid, e.Type)
	case aggregateOf[e.Type] != e.AggregateType:
		return fmt.Errorf("%w: type %q does not belong to aggregate type %q", ErrInvalid, e.Type, e.AggregateType)
	case e.AggregateID == uuid.Nil:
		return fmt.Errorf("%w: missing aggregate_id", ErrInvalid)
	case e.OwnerID == uuid.Nil:
		return fmt.Errorf("%w: missing owner_id", ErrInvalid)
	case e.Version < 1:
		return fmt.Errorf("%w: version %d", ErrInvalid, e.Version)
	case e.OccurredAt.IsZero():
		return fmt.Errorf("%w: missing occurred_at", ErrInvalid)
	case len(e.Data) == 0 || bytes.Equal(e.Data, []byte("null")):
		return fmt.Errorf("%w: missing data", ErrInvalid)
	case e.Stats != nil && (e.Stats.Version < 1 || e.Stats.Open < 0 || e.Stats.Completed < 0):
		return fmt.Errorf("%w: stats %+v", ErrInvalid, *e.Stats)
	case e.Stats != nil && e.Stats.Deleted && e.Stats.Total() != 0:
		return fmt.Errorf("%w: stats of a deleted user count todos", ErrInvalid)
	}
	return nil
}

// User decodes the data of a user.created or user.updated event.
func (e Envelope) User() (UserData, error) {
	var d UserData
	if e.AggregateType != AggregateUser || IsDelete(e.Type) {
		return d, fmt.Errorf("%w: %s carries no user state", ErrInvalid, e.Type)
	}
	if err := json.Unmarshal(e.Data, &d); err != nil {
		return d, fmt.Errorf("%w: user data: %v", ErrMalformed, err)
	}
	if d.ID != e.AggregateID || d.Version != e.Version {
		return d, fmt.Errorf("%w: user data does not match the envelope", ErrInvalid)
	}
	return d, nil
}

// Todo decodes the data of a todo.created or todo.updated event.
func (e Envelope) Todo() (TodoData, error) {
	var d TodoData
	if e.AggregateType != AggregateTodo || IsDelete(e.Type) {
		return d, fmt.Errorf("%w: %s carries no todo state", ErrInvalid, e.Type)
	}
	if err := json.Unmarshal(e.Data, &d); err != nil {
		return d, fmt.Errorf("%w: todo data: %v", ErrMalformed, err)
	}
	if d.ID != e.AggregateID || d.UserID != e.OwnerID || d.Version != e.Version {
		return d, fmt.Errorf("%w: todo data does not match the envelope", ErrInvalid)
	}
	return d, nil
}

// Tombstone decodes the data of a delete event.
func (e Envelope) Tombstone() (Tombstone, error) {
	var d Tombstone
	if !IsDelete(e.Type) {
		return d, fmt.Errorf("%w: %s is not a delete", ErrInvalid, e.Type)
	}
	if err := json.Unmarshal(e.Data, &d); err != nil {
		return d, fmt.Errorf("%w: tombstone: %v", ErrMalformed, err)
	}
	if d.ID != e.AggregateID || d.Version != e.Version {
		return d, fmt.Errorf("%w: tombstone does not match the envelope", ErrInvalid)
	}
	return d, nil
}
