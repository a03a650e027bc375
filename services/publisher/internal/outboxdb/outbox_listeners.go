package outboxdb

import (
	"context"
	"fmt"
	"time"

	"github.com/outboxtodo/outboxtodo/shared/outbox"
	"github.com/outboxtodo/outboxtodo/shared/postgres"
)

// The statements on outbox_listeners, and LISTEN. The API's writes notify on
// outbox.Channel only while a row here has not expired (services/api/internal/
// postgres, outbox.NotifySQL).
const (
	markListeningSQL = `
INSERT INTO outbox_listeners (replica_id, expires_at) VALUES ($1, now() + $2::bigint * interval '1 millisecond')
ON CONFLICT (replica_id) DO UPDATE SET expires_at = excluded.expires_at`
	unmarkListeningSQL = "DELETE FROM outbox_listeners WHERE replica_id = $1"
	listenSQL          = "LISTEN " + outbox.Channel
)

// MarkListening records that publisher replica is idle and listening on
// outbox.Channel, until ttl from now on the database clock: a write whose notification
// statement starts after the mark committed notifies. It refreshes an existing mark. A
// write whose notification statement read the listeners before the mark committed
// sent no notification, so a publisher drains the outbox once more after marking,
// before it sleeps; a write whose commit is still in flight then is found by the
// publisher's next poll. A replica that dies marked costs writes their notification
// until ttl has passed.
func MarkListening(ctx context.Context, db postgres.DBTX, replica string, ttl time.Duration) error {
	if _, err := db.Exec(ctx, markListeningSQL, replica, ttl.Milliseconds()); err != nil {
		return fmt.Errorf("mark %s listening: %w", replica, err)
	}
	return nil
}

// UnmarkListening removes replica's mark: writes stop notifying for it.
func UnmarkListening(ctx context.Context, db postgres.DBTX, replica string) error {
	if _, err := db.Exec(ctx, unmarkListeningSQL, replica); err != nil {
		return fmt.Errorf("unmark %s listening: %w", replica, err)
	}
	return nil
}

// Listen subscribes db's session to outbox.Channel. CockroachDB rejects it with an
// SQLSTATE.
func Listen(ctx context.Context, db postgres.DBTX) error {
	if _, err := db.Exec(ctx, listenSQL); err != nil {
		return fmt.Errorf("LISTEN %s: %w", outbox.Channel, err)
	}
	return nil
}
