package consumer_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/metrics"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/projtest"
)

// setBackendConnections lets FerretDB's PostgreSQL database accept connections or
// not; refusing also ends the ones it holds, as a restart of PostgreSQL does.
func setBackendConnections(t *testing.T, env *projtest.Env, allow bool) {
	t.Helper()
	u, err := url.Parse(env.Ferret.PostgreSQLURL())
	if err != nil {
		t.Fatal(err)
	}
	name := strings.Trim(u.Path, "/")
	admin := os.Getenv("TEST_DATABASE_URL")
	if admin == "" {
		admin = dbtest.DefaultAdminURL
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	// Identifiers cannot be parameters; name is test_<hex>, made by dbtest.NewEmpty.
	if _, err := conn.Exec(ctx, fmt.Sprintf("ALTER DATABASE %s WITH ALLOW_CONNECTIONS %t", pgx.Identifier{name}.Sanitize(), allow)); err != nil {
		t.Fatal(err)
	}
	if !allow {
		if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1`, name); err != nil {
			t.Fatal(err)
		}
	}
}

// FerretDB's PostgreSQL backend goes away while FerretDB itself keeps answering, with
// InternalError to every command. That is an outage: held, then applied, never
// dead-lettered (the fault runner found it naked towards the dead letters).
func TestReadModelBackendOutageNotDeadLettered(t *testing.T) {
	t.Parallel()
	env := projtest.New(t)
	w := simpleWorld(t, 4, 3)
	half := len(w.Events) / 2
	cfg := env.ConsumerConfig("projector")
	cfg.MaxDeliver = 2 // a rejection's second delivery would be its last
	cfg.AckWait = 3 * time.Second
	cfg.WriteTimeout = time.Second
	r := env.Start(t, cfg)
	env.Publish(t, w.Events[:half]...)
	projtest.Eventually(t, 60*time.Second, func() (bool, string) {
		n := testutil.ToFloat64(r.Metrics.Events.WithLabelValues(metrics.OutcomeApplied))
		return n == float64(half), fmt.Sprintf("%v of %d applied", n, half)
	})

	setBackendConnections(t, env, false)
	t.Cleanup(func() { setBackendConnections(t, env, true) })
	down := time.Now()
	env.Publish(t, w.Events[half:]...)
	projtest.Eventually(t, 60*time.Second, func() (bool, string) {
		n := testutil.ToFloat64(r.Metrics.Events.WithLabelValues(metrics.OutcomeFailed))
		return n >= 3 && time.Since(down) > cfg.AckWait+time.Second, fmt.Sprintf("%v failed attempts", n)
	})
	setBackendConnections(t, env, true)

	projtest.Eventually(t, 90*time.Second, converged(env, w))
	if dls := deadLetters(t, env); len(dls) != 0 {
		t.Fatalf("dead letters after a backend outage: %+v", dls)
	}
	if n := testutil.ToFloat64(r.Metrics.Events.WithLabelValues(metrics.OutcomeDeadLettered)); n != 0 {
		t.Fatalf("dead-lettered counter = %v, want 0", n)
	}
}

// Two replicas: one applies everything while the other stands by; when the active one
// stops, the standby takes over (after AckWait) and the read model converges.
func TestOneReplicaActiveStandbyTakesOver(t *testing.T) {
	t.Parallel()
	env := projtest.New(t)
	w := simpleWorld(t, 3, 3)
	env.Publish(t, w.Events...)
	cfg := env.ConsumerConfig("projector")
	cfg.AckWait = 3 * time.Second
	a, b := env.Start(t, cfg), env.Start(t, cfg)
	projtest.Eventually(t, 60*time.Second, converged(env, w))
	projtest.Eventually(t, 30*time.Second, drained(env, "projector"))

	handled := func(r *projtest.Replica) float64 {
		return testutil.ToFloat64(r.Metrics.Events.WithLabelValues(metrics.OutcomeApplied)) +
			testutil.ToFloat64(r.Metrics.Events.WithLabelValues(metrics.OutcomeStale))
	}
	active, standby := a, b
	if handled(a) == 0 {
		active, standby = b, a
	}
	if handled(active) == 0 || handled(standby) != 0 {
		t.Fatalf("replicas handled %v and %v events: want one active, one idle", handled(a), handled(b))
	}

	active.Stop()
	before := len(w.Events)
	u := w.CreateUser()
	w.CreateTodo(u, "after the takeover")
	env.Publish(t, w.Events[before:]...)
	projtest.Eventually(t, 60*time.Second, converged(env, w))
	if handled(standby) == 0 {
		t.Fatal("the standby handled nothing after the active replica stopped")
	}
}
