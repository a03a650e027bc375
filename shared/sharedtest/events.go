package sharedtest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/outbox"
	"github.com/outboxtodo/outboxtodo/shared/postgres"
)

// PublishEvents publishes events into js as the publisher does: body e.Encode(),
// subject event.Subject under prefix, Nats-Msg-Id the event id.
func PublishEvents(t testing.TB, js jetstream.JetStream, prefix string, events ...event.Envelope) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, ev := range events {
		b, err := ev.Encode()
		if err != nil {
			t.Fatal(err)
		}
		msg := nats.NewMsg(event.Subject(prefix, ev))
		msg.Data = b
		msg.Header.Set(jetstream.MsgIDHeader, ev.ID.String())
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatalf("publish %s: %v", ev.ID, err)
		}
	}
}

// WriteOutbox copies the outbox rows of events into db in the outbox's row format, as
// the API's writes leave them (without the wake-up notification).
func WriteOutbox(ctx context.Context, db postgres.DBTX, events ...event.Envelope) error {
	if _, err := db.CopyFrom(ctx, pgx.Identifier{outbox.Table}, outbox.Columns, pgx.CopyFromSlice(len(events), func(i int) ([]any, error) {
		return outbox.Row(events[i])
	})); err != nil {
		return fmt.Errorf("write %d outbox rows: %w", len(events), err)
	}
	return nil
}
