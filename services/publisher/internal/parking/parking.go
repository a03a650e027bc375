// Package parking is the operator's side of parked outbox rows: rows the publisher gave
// up on after MAX_ATTEMPTS failed publishes. Listing shows why; retrying puts them back
// in the drain, with their attempts reset, ahead of the later versions that waited
// behind them.
package parking

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outboxtodo/outboxtodo/shared/postgres"
)

// Row is one parked outbox row.
type Row struct {
	EventID       uuid.UUID `json:"event_id"`
	EventType     string    `json:"event_type"`
	AggregateType string    `json:"aggregate_type"`
	AggregateID   uuid.UUID `json:"aggregate_id"`
	Version       int64     `json:"aggregate_version"`
	Attempts      int       `json:"attempts"`
	LastError     string    `json:"last_error"`
	CreatedAt     time.Time `json:"created_at"`
	ParkedAt      time.Time `json:"parked_at"`
}

// List returns up to limit parked rows, oldest first.
func List(ctx context.Context, db postgres.DBTX, limit int) ([]Row, error) {
	rows, err := db.Query(ctx, `
SELECT event_id, event_type, aggregate_type, aggregate_id, aggregate_version, attempts,
       coalesce(last_error, ''), created_at, parked_at
FROM outbox WHERE parked_at IS NOT NULL AND published_at IS NULL
ORDER BY parked_at LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("list parked rows: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Row, error) {
		var p Row
		err := r.Scan(&p.EventID, &p.EventType, &p.AggregateType, &p.AggregateID, &p.Version, &p.Attempts, &p.LastError, &p.CreatedAt, &p.ParkedAt)
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("list parked rows: %w", err)
	}
	return out, nil
}

// Retry unparks the given rows, or every parked row when ids is empty, and returns how
// many it unparked. The publisher picks them up at its next drain.
func Retry(ctx context.Context, db postgres.DBTX, ids []uuid.UUID) (int64, error) {
	const base = `
UPDATE outbox SET parked_at = NULL, next_attempt_at = NULL, attempts = 0
WHERE parked_at IS NOT NULL AND published_at IS NULL`
	var (
		tag pgconn.CommandTag
		err error
	)
	if len(ids) == 0 {
		tag, err = db.Exec(ctx, base)
	} else {
		tag, err = db.Exec(ctx, base+" AND event_id = ANY($1)", ids)
	}
	if err != nil {
		return 0, fmt.Errorf("retry parked rows: %w", err)
	}
	return tag.RowsAffected(), nil
}
