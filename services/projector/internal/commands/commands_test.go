package commands_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/commands"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/projtest"
	"github.com/outboxtodo/outboxtodo/shared/readmodel/ferretindex"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
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

// startRun runs the projector's run command until the end of the test.
func startRun(t *testing.T, ctx context.Context, env *projtest.Env) {
	t.Helper()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- commands.Run(runCtx, env.Log, []string{"run"}, io.Discard) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
}

// The projector process in-process, configured from the environment as in production:
// it applies the stream into the read model and serves its admin endpoints. (The
// verify of PostgreSQL against the read model is todoctl's; see its tests.)
func TestRunCommand(t *testing.T) {
	env := projtest.New(t)
	admin := freeAddr(t)
	t.Setenv("NATS_URL", env.NATS.ClientURL())
	t.Setenv("MONGODB_URI", env.Ferret.URI())
	t.Setenv("MONGODB_DATABASE", env.Control)
	t.Setenv("ADMIN_ADDR", admin)
	t.Setenv("FETCH_WAIT", "200ms")
	t.Setenv("STATS_INTERVAL", "200ms")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w := projtest.NewWorld(t)
	u := w.CreateUser()
	w.SetCompleted(w.CreateTodo(u, "a"), true)
	w.CreateTodo(u, "b")
	env.Publish(t, w.Events...)

	startRun(t, ctx, env)

	projtest.Eventually(t, 60*time.Second, env.Converged(w))
	if code, body := get(t, "http://"+admin+"/readyz"); code != http.StatusOK {
		t.Fatalf("readyz = %d %s", code, body)
	}
	_, metrics := get(t, "http://"+admin+"/metrics")
	for _, m := range []string{`projector_events_total{outcome="applied"} 4`, "projector_lag_seconds_count 4", "projector_dead_letters 0"} {
		if !strings.Contains(metrics, m) {
			t.Errorf("metrics lack %q", m)
		}
	}

	var out bytes.Buffer
	if err := commands.Run(ctx, env.Log, []string{"deadletters", "list"}, &out); err != nil || !strings.Contains(out.String(), "0 dead letters") {
		t.Fatalf("deadletters list = %v:\n%s", err, out.String())
	}
}

// With FERRETDB_POSTGRESQL_URL set, the projector gives a read model it has never seen
// FerretDB's GIN indexes at start, before it applies anything.
func TestRunCreatesFerretIndexes(t *testing.T) {
	env := projtest.New(t)
	admin := freeAddr(t)
	const fresh = "todo_read_fresh"
	t.Setenv("NATS_URL", env.NATS.ClientURL())
	t.Setenv("MONGODB_URI", env.Ferret.URI())
	t.Setenv("MONGODB_DATABASE", fresh)
	t.Setenv("FERRETDB_POSTGRESQL_URL", env.Ferret.PostgreSQLURL())
	t.Setenv("ADMIN_ADDR", admin)
	t.Setenv("FETCH_WAIT", "200ms")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	startRun(t, ctx, env)
	// Ready once the consumer runs, which is after the indexes.
	projtest.Eventually(t, 30*time.Second, func() (bool, string) {
		code, body := get(t, "http://"+admin+"/readyz")
		return code == http.StatusOK, fmt.Sprintf("readyz %d %s", code, body)
	})
	gin := env.Ferret.GINIndexes(t)
	for _, f := range slices.Concat(ferretindex.ReadModelFields, ferretindex.ControlFields) {
		if gin[fresh+"."+f.Collection+"."+f.Field] == "" {
			t.Errorf("no GIN index on %s.%s.%s; GIN indexes: %v", fresh, f.Collection, f.Field, gin)
		}
	}
}

// toolsEnv points the commands at env, as an operator's environment would.
func toolsEnv(t *testing.T, env *projtest.Env) {
	t.Helper()
	t.Setenv("NATS_URL", env.NATS.ClientURL())
	t.Setenv("MONGODB_URI", env.Ferret.URI())
	t.Setenv("MONGODB_DATABASE", env.Control)
	t.Setenv("FERRETDB_POSTGRESQL_URL", env.Ferret.PostgreSQLURL())
}
