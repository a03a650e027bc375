package commands_test

import (
	"context"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/commands"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/projtest"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/process"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
	"github.com/outboxtodo/outboxtodo/tools/devstack/natsserver"
)

// TestSecretsNeverLogged runs the projector at debug level against a NATS server that
// requires a password, applies an event, then fails to start with a wrong NATS
// password, an nkey seed the server does not know, a MongoDB URI with a password and
// one with a client key passphrase, and checks that no password, passphrase or seed
// appears in any log line.
func TestSecretsNeverLogged(t *testing.T) {
	env := projtest.New(t)
	natsPassword := "np-" + rand.Text()
	mongoPassword, keyPassphrase := "mp-"+rand.Text(), "kp-"+rand.Text()
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
		Users: []natsserver.User{{Name: "projector", Password: natsPassword}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	natsURL := strings.Replace(srv.ClientURL(), "nats://", "nats://projector:"+natsPassword+"@", 1)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: env.Stream, Subjects: []string{event.StreamSubjects(projtest.Prefix)}}); err != nil {
		t.Fatal(err)
	}
	id := uuid.New()
	now := time.Now().UTC()
	ev, err := event.New(event.UserCreated, id, id, 1, now, event.TraceContext{RequestID: "req-secret-test"},
		event.UserData{ID: id, Email: "s@example.com", DisplayName: "S", Version: 1, CreatedAt: now, UpdatedAt: now})
	if err != nil {
		t.Fatal(err)
	}
	body, err := ev.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, event.Subject(projtest.Prefix, ev), body); err != nil {
		t.Fatal(err)
	}

	t.Setenv("NATS_URL", natsURL)
	t.Setenv("MONGODB_URI", env.Ferret.URI())
	t.Setenv("MONGODB_DATABASE", env.Control)
	t.Setenv("MONGODB_TIMEOUT", "1s")
	t.Setenv("ADMIN_ADDR", freeAddr(t))
	t.Setenv("FETCH_WAIT", "100ms")
	logs := &sharedtest.LogBuffer{}
	log, err := process.NewLogger(logs, "projector", "debug")
	if err != nil {
		t.Fatal(err)
	}

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- commands.Run(runCtx, log, []string{"run"}, io.Discard) }()
	projtest.Eventually(t, time.Minute, func() (bool, string) {
		return strings.Contains(logs.String(), `"msg":"event applied"`), "the event was not applied"
	})
	stop()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}

	// Start-up failures are logged once by process.Main; do the same here.
	for _, change := range [][2]string{
		{"NATS_URL", strings.Replace(natsURL, natsPassword, natsPassword+"x", 1)},
		{"NATS_NKEY_SEED", seedFile},
		{"MONGODB_URI", "mongodb://projector:" + mongoPassword + "@127.0.0.1:1/?directConnection=true"},
		{"MONGODB_URI", "mongodb://127.0.0.1:1/?tls=true&tlsCertificateKeyFile=" + seedFile + "&tlsCertificateKeyFilePassword=" + keyPassphrase},
	} {
		t.Setenv("NATS_URL", srv.ClientURL())
		t.Setenv("NATS_NKEY_SEED", "")
		t.Setenv("MONGODB_URI", env.Ferret.URI())
		t.Setenv(change[0], change[1])
		fctx, fcancel := context.WithTimeout(ctx, 30*time.Second)
		err := commands.Run(fctx, log, []string{"run"}, io.Discard)
		fcancel()
		if err == nil {
			t.Fatalf("run started with %s", change[0])
		}
		log.Error("exiting on error", "error", err)
	}

	out := logs.String()
	for _, want := range []string{`"msg":"starting"`, `"msg":"event applied"`, `"request_id":"req-secret-test"`,
		`"msg":"exiting on error"`, "Authorization Violation"} {
		if !strings.Contains(out, want) {
			t.Fatalf("the logs lack %s, so the test saw less than it should:\n%s", want, out)
		}
	}
	for _, s := range []string{natsPassword, mongoPassword, keyPassphrase, string(seed)} {
		if strings.Contains(out, s) {
			t.Errorf("a secret (%.6s...) is in the logs", s)
		}
	}
	if t.Failed() || testing.Verbose() {
		t.Log(out)
	}
}
