package outbox

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboxtodo/outboxtodo/shared/postgres"
)

// Channel is the PostgreSQL notification channel that wakes the publisher when outbox
// rows commit.
const Channel = "outbox"

// Notify asks PostgreSQL to wake the publisher when tx commits, if a publisher replica
// is idle and listening (see MarkListening): pg_notify takes a lock that serializes every
// notifying commit of the database, which halved commit throughput at 32 clients, and a
// busy publisher polls at its shortest interval anyway. pg_notify is transactional (a
// rolled-back transaction sends nothing, and PostgreSQL folds the identical
// notifications of one transaction into one). Call it in the transaction that inserted
// outbox rows, after Insert (so that the transaction has its id when it reads the
// listeners; see MarkListening), and only when NotifySupported said yes: on CockroachDB
// pg_notify does not exist and the call fails the transaction.
//
// The publisher does not depend on it for correctness: it also polls.
func Notify(ctx context.Context, tx postgres.DBTX) error {
	if _, err := tx.Exec(ctx, NotifySQL, Channel); err != nil {
		return fmt.Errorf("notify %s: %w", Channel, err)
	}
	return nil
}

// QueueNotify queues Notify's statement on b (see QueueInsert): reading the listeners
// costs no round trip of its own.
func QueueNotify(b *pgx.Batch) { b.Queue(NotifySQL, Channel) }

// NotifySQL is Notify's statement; its parameter is Channel. It notifies at most once,
// and only while an unexpired listener row exists.
const NotifySQL = "SELECT pg_notify($1, '') FROM outbox_listeners WHERE expires_at > now() LIMIT 1"

// MarkListening records that publisher replica is idle and listening on Channel, until
// ttl from now on the database clock: writes notify from their next statement on. It
// refreshes an existing mark. A write that read the listeners before the mark committed
// sent no notification, so a publisher drains the outbox once more after marking,
// before it sleeps; a write whose commit is still in flight then is found by the
// publisher's next poll. A replica that dies marked costs writes their notification
// until ttl has passed.
func MarkListening(ctx context.Context, db postgres.DBTX, replica string, ttl time.Duration) error {
	if _, err := db.Exec(ctx, `
INSERT INTO outbox_listeners (replica_id, expires_at) VALUES ($1, now() + $2::bigint * interval '1 millisecond')
ON CONFLICT (replica_id) DO UPDATE SET expires_at = excluded.expires_at`, replica, ttl.Milliseconds()); err != nil {
		return fmt.Errorf("mark %s listening: %w", replica, err)
	}
	return nil
}

// UnmarkListening removes replica's mark: writes stop notifying for it.
func UnmarkListening(ctx context.Context, db postgres.DBTX, replica string) error {
	if _, err := db.Exec(ctx, "DELETE FROM outbox_listeners WHERE replica_id = $1", replica); err != nil {
		return fmt.Errorf("unmark %s listening: %w", replica, err)
	}
	return nil
}

// NotifySupported probes, once at start, whether the database can send notifications:
// PostgreSQL can, CockroachDB cannot. It sends one empty notification on Channel (a
// spurious wake-up costs the publisher one empty poll). A connection failure is an
// error; a server that rejects pg_notify is a plain false.
func NotifySupported(ctx context.Context, db postgres.DBTX) (bool, error) {
	_, err := db.Exec(ctx, "SELECT pg_notify($1, '')", Channel)
	if err == nil {
		return true, nil
	}
	if postgres.SQLState(err) != "" {
		return false, nil
	}
	return false, fmt.Errorf("probe pg_notify: %w", err)
}
