package sharedtest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxtodo/outboxtodo/shared/event"
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
