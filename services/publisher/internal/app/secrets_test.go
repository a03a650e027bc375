package app_test

import (
	"context"
	"crypto/rand"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nkeys"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/app"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/config"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/pubtest"
	"github.com/outboxtodo/outboxtodo/shared/process"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
	"github.com/outboxtodo/outboxtodo/tools/devstack/natsserver"
)

// runEnviron runs a replica as main does, configured from environ instead of the
// process environment.
func runEnviron(ctx context.Context, log *slog.Logger, environ map[string]string) error {
	return process.RunApp(ctx, log, func() (config.Config, error) { return config.FromMap(environ) }, app.New)
}

// TestSecretsNeverLogged runs the publisher at debug level against a NATS server that
// requires a password and a database URL that carries one, publishes a row, then
// fails to start with a wrong NATS password, with an nkey seed the server does not
// know, and with an unreachable database, and checks that neither password nor the
// seed appears in any log line.
func TestSecretsNeverLogged(t *testing.T) {
	t.Parallel()
	natsPassword := "np-" + rand.Text()
	dbPassword := "dp-" + rand.Text()
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, err := user.Seed()
	if err != nil {
		t.Fatal(err)
	}
	seedFile := filepath.Join(t.TempDir(), "user.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	srv, err := natsserver.Start(natsserver.Config{StoreDir: t.TempDir(),
		Users: []natsserver.User{{Name: "publisher", Password: natsPassword}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	natsURL := strings.Replace(srv.ClientURL(), "nats://", "nats://publisher:"+natsPassword+"@", 1)
	pool, rawDB := dbtest.NewPool(t)
	dbURL, err := url.Parse(rawDB)
	if err != nil {
		t.Fatal(err)
	}
	dbURL.User = url.UserPassword("postgres", dbPassword) // the test server trusts; the password is only carried

	logs := &sharedtest.LogBuffer{}
	log, err := process.NewLogger(logs, "publisher", "debug")
	if err != nil {
		t.Fatal(err)
	}
	environ := map[string]string{"DATABASE_URL": dbURL.String(), "NATS_URL": natsURL, "ADMIN_ADDR": "127.0.0.1:0",
		"LOG_LEVEL": "debug", "WAKE_MODE": "poll", "POLL_MAX": "50ms"}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ev := pubtest.Event(t, uuid.New(), uuid.New(), 1, "")
	ev.Trace.RequestID = "req-secret-test"
	if err := pubtest.Write(ctx, pool, false, ev); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- runEnviron(runCtx, log, environ) }()
	waitPublished(ctx, t, pool, ev.ID, done)
	stop()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}

	// Start-up failures are logged once by process.Main; do the same here.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := ln.Addr().String()
	_ = ln.Close()
	for _, change := range []map[string]string{
		{"NATS_URL": strings.Replace(natsURL, natsPassword, natsPassword+"x", 1)},
		{"NATS_URL": srv.ClientURL(), "NATS_NKEY_SEED": seedFile},
		{"DATABASE_URL": "postgres://app:" + dbPassword + "@" + closedPort + "/todo?sslmode=disable"},
	} {
		env := map[string]string{}
		for k, v := range environ {
			env[k] = v
		}
		for k, v := range change {
			env[k] = v
		}
		fctx, fcancel := context.WithTimeout(ctx, 30*time.Second)
		err := runEnviron(fctx, log, env)
		fcancel()
		if err == nil {
			t.Fatalf("run started with %v", change)
		}
		log.Error("exiting on error", "error", err)
	}

	out := logs.String()
	for _, want := range []string{`"msg":"starting publisher"`, `"msg":"event published"`, `"request_id":"req-secret-test"`,
		`"msg":"exiting on error"`, "Authorization Violation"} {
		if !strings.Contains(out, want) {
			t.Fatalf("the logs lack %s, so the test saw less than it should:\n%s", want, out)
		}
	}
	for _, s := range []string{natsPassword, dbPassword, string(seed)} {
		if strings.Contains(out, s) {
			t.Errorf("a secret (%.6s...) is in the logs", s)
		}
	}
	if t.Failed() {
		t.Log(out)
	}
}

// waitPublished polls until event id is recorded published.
func waitPublished(ctx context.Context, t *testing.T, pool *pgxpool.Pool, id uuid.UUID, done <-chan error) {
	t.Helper()
	for {
		var published bool
		if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM outbox_published WHERE event_id = $1)`, id).Scan(&published); err != nil {
			t.Fatal(err)
		}
		if published {
			return
		}
		select {
		case err := <-done:
			t.Fatalf("run returned before publishing: %v", err)
		case <-ctx.Done():
			t.Fatal("the row was not published in time")
		case <-time.After(20 * time.Millisecond):
		}
	}
}
