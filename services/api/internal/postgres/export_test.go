package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/outboxtodo/outboxtodo/shared/event"
)

// Committed is committed, the probe of a write whose commit's answer was lost.
var Committed = committed

// Emit writes the outbox rows of events in tx, a transaction the test holds open or
// shares with statements of its own, as Tx.Emit does.
func Emit(ctx context.Context, tx pgx.Tx, events ...event.Envelope) error {
	return (&Tx{tx: tx}).Emit(ctx, events...)
}
