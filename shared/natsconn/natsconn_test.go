package natsconn_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/outboxtodo/outboxtodo/shared/natsconn"
)

// down is an address where nothing listens: port 1 is privileged and unused.
const down = "127.0.0.1:1"

func TestConnectFailsWhenNoServerAnswers(t *testing.T) {
	t.Parallel()
	_, err := natsconn.Connect("nats://"+down, natsconn.Config{}, "test", slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "connect to NATS") {
		t.Fatalf("err = %v", err)
	}
}

// An option passed in wins over the defaults: with RetryOnFailedConnect the client
// starts while the server is down, and keeps trying.
func TestConnectOptionsComeLast(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	nc, err := natsconn.Connect("nats://"+down, natsconn.Config{}, "test", slog.New(slog.NewTextHandler(&logs, nil)),
		nats.RetryOnFailedConnect(true))
	if err != nil {
		t.Fatal(err)
	}
	if nc.Opts.Name != "test" || nc.Opts.MaxReconnect != -1 {
		t.Fatalf("name %q, max reconnects %d", nc.Opts.Name, nc.Opts.MaxReconnect)
	}
	nc.Close()
	if strings.Contains(logs.String(), "disconnected") {
		t.Fatalf("our own Close was logged as a disconnection: %s", logs.String())
	}
}

func TestConnectReportsAnUnreadableSeed(t *testing.T) {
	t.Parallel()
	_, err := natsconn.Connect("nats://"+down, natsconn.Config{NkeySeed: "/nonexistent/seed.nk"}, "test", slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "NATS_NKEY_SEED") {
		t.Fatalf("err = %v", err)
	}
}
