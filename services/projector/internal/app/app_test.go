package app_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/app"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/config"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/operate"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/projtest"
	"github.com/outboxtodo/outboxtodo/shared/process"
	"github.com/outboxtodo/outboxtodo/shared/readmodel/ferretindex"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

// setAdminAddr points ADMIN_ADDR at a free loopback port and returns the address.
func setAdminAddr(t *testing.T) string {
	admin := "127.0.0.1:" + sharedtest.FreePorts(t, 1)[0]
	t.Setenv("ADMIN_ADDR", admin)
	return admin
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// startRun runs the projector as main does, configured from the environment, until
// the end of the test.
func startRun(t *testing.T, ctx context.Context, env *projtest.Env) {
	t.Helper()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- process.RunApp(runCtx, env.Log, config.Load, app.New) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
}

// awaitReady waits until the admin server at admin answers /readyz with 200.
func awaitReady(t *testing.T, admin string) {
	t.Helper()
	sharedtest.Eventually(t, 30*time.Second, func() (bool, string) {
		code, body := get(t, "http://"+admin+"/readyz")
		return code == http.StatusOK, fmt.Sprintf("readyz %d %s", code, body)
	})
}

// The projector process in-process, configured from the environment as in production:
// it applies the stream into the read model, serves its admin endpoints, and leaves no
// dead letters. (Verify, which compares the read model with PostgreSQL, is todoctl's,
// tested in the API module.)
func TestRunCommand(t *testing.T) {
	env := projtest.New(t)
	env.Setenv(t)
	admin := setAdminAddr(t)

	ctx := sharedtest.Context(t, 2*time.Minute)
	w := projtest.NewWorld(t)
	u := w.CreateUser()
	w.SetCompleted(w.CreateTodo(u, "a"), true)
	w.CreateTodo(u, "b")
	env.Publish(t, w.Events...)

	startRun(t, ctx, env)

	sharedtest.Eventually(t, 60*time.Second, env.Converged(w))
	if code, body := get(t, "http://"+admin+"/readyz"); code != http.StatusOK {
		t.Fatalf("readyz = %d %s", code, body)
	}
	metrics := sharedtest.Fetch(t, ctx, "http://"+admin+"/metrics")
	for _, m := range []string{`projector_events_total{outcome="applied"} 4`, "projector_lag_seconds_count 4", "projector_dead_letters 0"} {
		if !strings.Contains(metrics, m) {
			t.Errorf("metrics lack %q", m)
		}
	}

	var out bytes.Buffer
	if err := operate.Run(ctx, "deadletters", []string{"list"}, &out, env.Log); err != nil || !strings.Contains(out.String(), "0 dead letters") {
		t.Fatalf("deadletters list = %v:\n%s", err, out.String())
	}
}

// With FERRETDB_POSTGRESQL_URL set, the projector gives a read model it has never seen
// FerretDB's GIN indexes at start, before it applies anything.
func TestRunCreatesFerretIndexes(t *testing.T) {
	env := projtest.New(t)
	env.Setenv(t)
	admin := setAdminAddr(t)
	const fresh = "todo_read_fresh"
	t.Setenv("MONGODB_DATABASE", fresh)
	t.Setenv("FERRETDB_POSTGRESQL_URL", env.Ferret.PostgreSQLURL())

	ctx := sharedtest.Context(t, time.Minute)
	startRun(t, ctx, env)
	awaitReady(t, admin) // once the consumer runs, which is after the indexes
	gin := env.Ferret.GINIndexes(t)
	for _, f := range slices.Concat(ferretindex.ReadModelFields, ferretindex.ControlFields) {
		if gin[fresh+"."+f.Collection+"."+f.Field] == "" {
			t.Errorf("no GIN index on %s.%s.%s; GIN indexes: %v", fresh, f.Collection, f.Field, gin)
		}
	}
}
