package outbox

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/outboxtodo/outboxtodo/shared/postgres"
)

// Channel is the PostgreSQL notification channel that wakes the publisher when outbox
// rows commit.
const Channel = "outbox"

// Notify asks PostgreSQL to wake the publisher when tx commits (pg_notify is
// transactional: a rolled-back transaction sends nothing, and PostgreSQL folds the
// identical notifications of one transaction into one). Call it in the transaction that
// inserted outbox rows, after Insert, and only when NotifySupported said yes: on
// CockroachDB pg_notify does not exist and the call fails the transaction.
//
// The publisher does not depend on it for correctness: it also polls.
func Notify(ctx context.Context, tx postgres.DBTX) error {
	if _, err := tx.Exec(ctx, notifySQL, Channel); err != nil {
		return fmt.Errorf("notify %s: %w", Channel, err)
	}
	return nil
}

// QueueNotify queues Notify's statement on b (see QueueInsert).
func QueueNotify(b *pgx.Batch) { b.Queue(notifySQL, Channel) }

const notifySQL = "SELECT pg_notify($1, '')"

// NotifySupported probes, once at start, whether the database can send notifications:
// PostgreSQL can, CockroachDB cannot. It sends one empty notification on Channel (a
// spurious wake-up costs the publisher one empty poll). A connection failure is an
// error; a server that rejects pg_notify is a plain false.
func NotifySupported(ctx context.Context, db postgres.DBTX) (bool, error) {
	_, err := db.Exec(ctx, notifySQL, Channel)
	if err == nil {
		return true, nil
	}
	if postgres.SQLState(err) != "" {
		return false, nil
	}
	return false, fmt.Errorf("probe pg_notify: %w", err)
}
