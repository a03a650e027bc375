package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/outboxtodo/outboxtodo/services/api/internal/app"
	"github.com/outboxtodo/outboxtodo/services/api/internal/config"
	"github.com/outboxtodo/outboxtodo/shared/process"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

// run runs the API as main does, configured from environ instead of the process
// environment.
func run(ctx context.Context, log *slog.Logger, environ map[string]string) error {
	return process.RunApp(ctx, log, func() (config.Config, error) { return config.FromMap(environ) }, app.New)
}

// startWithReadSideDown runs the API as main does until the test ends, with the
// settings of environ and a read side that is down: MongoDB and NATS at an address
// where nothing listens. It returns the logs, and the channel run's result comes on.
func startWithReadSideDown(t *testing.T, environ map[string]string) (*sharedtest.LogBuffer, <-chan error) {
	t.Helper()
	logs := &sharedtest.LogBuffer{}
	log, err := process.NewLogger(logs, "api", "info")
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"API_ADDR": "127.0.0.1:0", "ADMIN_ADDR": "localhost:0",
		"NATS_URL": "nats://" + down, "MONGODB_URI": "mongodb://" + down + "/?directConnection=true", "MONGODB_TIMEOUT": "200ms",
	}
	maps.Copy(env, environ)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, log, env) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("run did not stop")
		}
	})
	return logs, done
}

// down is an address where nothing listens: port 1 is privileged and unused.
const down = "127.0.0.1:1"

// listeningAddr waits for run to log the API's address.
func listeningAddr(t *testing.T, logs *sharedtest.LogBuffer, done <-chan error) string {
	t.Helper()
	return loggedAddr(t, logs, done, "api server listening")
}

// loggedAddr waits for run to log the address of a listener with message msg.
func loggedAddr(t *testing.T, logs *sharedtest.LogBuffer, done <-chan error, msg string) string {
	t.Helper()
	var addr string
	sharedtest.Eventually(t, 30*time.Second, func() (bool, string) {
		select {
		case err := <-done:
			t.Fatalf("run returned before listening: %v\n%s", err, logs.String())
		default:
		}
		for line := range strings.Lines(logs.String()) {
			var l struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &l) == nil && l.Msg == msg {
				addr = l.Addr
				return true, ""
			}
		}
		return false, fmt.Sprintf("no %q in the logs:\n%s", msg, logs.String())
	})
	return addr
}
