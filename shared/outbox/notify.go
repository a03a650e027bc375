package outbox

import (
	"context"
	"fmt"

	"github.com/outboxtodo/outboxtodo/shared/postgres"
)

// Channel is the PostgreSQL notification channel that wakes the publisher when outbox
// rows commit. Writers notify on it only while a publisher replica is marked idle and
// listening in outbox_listeners; the publisher does not depend on it for correctness,
// it also polls.
const Channel = "outbox"

// NotifySQL is the wake-up a write queues after its outbox rows, with Channel as its
// parameter: one notification at commit, sent only while a publisher replica is marked
// listening (an unexpired row of outbox_listeners, which the publisher writes). The API
// sends it (services/api/internal/postgres, where its costs are explained); the
// publisher's tests send the same statement.
const NotifySQL = "SELECT pg_notify($1, '') FROM outbox_listeners WHERE expires_at > now() LIMIT 1"

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
