package app_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/app"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/config"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/pubtest"
	"github.com/outboxtodo/outboxtodo/shared/process"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
	"github.com/outboxtodo/outboxtodo/tools/devstack/natsserver"
)

// run runs a replica configured by cfg as main does.
func run(ctx context.Context, log *slog.Logger, cfg config.Config) error {
	return process.RunApp(ctx, log, func() (config.Config, error) { return cfg, nil }, app.New)
}

const streamName = "TODO_EVENTS"

// stack is one test's database and NATS (one server or a cluster).
type stack struct {
	dbURL   string
	natsURL string
	pool    *pgxpool.Pool
	js      jetstream.JetStream
}

func newStack(t testing.TB, natsURL string) *stack {
	t.Helper()
	pool, dbURL := dbtest.NewPool(t)
	_, js := natsserver.Connect(t, natsURL, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	return &stack{dbURL: dbURL, natsURL: natsURL, pool: pool, js: js}
}

// start runs a publisher replica until the returned stop is called (or the test ends)
// and fails the test if it exits with an error.
func (s *stack) start(t testing.TB, name string, env map[string]string) (stop func()) {
	t.Helper()
	base := map[string]string{
		"DATABASE_URL":      s.dbURL,
		"NATS_URL":          s.natsURL,
		"ADMIN_ADDR":        "127.0.0.1:0",
		"REPLICA_ID":        name,
		"DB_MAX_CONNS":      "3",
		"BATCH_SIZE":        "200",
		"LEASE_TTL":         "1s",
		"POLL_MIN":          "5ms",
		"POLL_MAX":          "100ms",
		"PUBLISH_TIMEOUT":   "2s",
		"RETRY_BACKOFF_MIN": "10ms",
		"RETRY_BACKOFF_MAX": "200ms",
		"STATS_INTERVAL":    "200ms",
		"SHUTDOWN_TIMEOUT":  "5s",
	}
	for k, v := range env {
		base[k] = v
	}
	cfg, err := config.FromMap(base)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := run(ctx, sharedtest.Logger(t, slog.LevelInfo).With("replica", name), cfg); err != nil {
			t.Errorf("replica %s: %v", name, err)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// leasesOf counts the unexpired leases each replica holds.
func (s *stack) leasesOf(ctx context.Context, t testing.TB) map[string]int {
	t.Helper()
	rows, err := s.pool.Query(ctx, `SELECT owner, count(*) FROM publisher_leases WHERE expires_at > now() AND owner <> '' GROUP BY owner`)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	var (
		o string
		n int
	)
	if _, err := pgx.ForEachRow(rows, []any{&o, &n}, func() error { out[o] = n; return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// leasesReach waits until the replicas' unexpired leases satisfy ok.
func (s *stack) leasesReach(ctx context.Context, t testing.TB, what string, ok func(map[string]int) bool) {
	t.Helper()
	sharedtest.Eventually(t, time.Minute, func() (bool, string) {
		l := s.leasesOf(ctx, t)
		return ok(l), fmt.Sprintf("%s: leases %v", what, l)
	})
}

// waitPublished waits until every outbox row is published and the stream holds at
// least n messages.
func (s *stack) waitPublished(ctx context.Context, t testing.TB, n int) {
	t.Helper()
	pubtest.WaitPublished(ctx, t, s.pool, s.js, streamName, n)
}

// publishedOnce waits until every outbox row is published, then checks that the stream
// holds ids exactly once, each aggregate's in version order.
func (s *stack) publishedOnce(ctx context.Context, t testing.TB, ids []uuid.UUID) {
	t.Helper()
	s.waitPublished(ctx, t, len(ids))
	pubtest.CheckExactlyOnceInOrder(t, pubtest.ReadStream(ctx, t, s.js, streamName), ids)
}

func TestTenThousandEventsFromConcurrentWriters(t *testing.T) {
	t.Parallel()
	// A bound for a hang, not a speed check: under -race on two loaded cores the eight
	// writers alone took 46-49 s, and the 90 s this had was hit twice.
	ctx := sharedtest.Context(t, 4*time.Minute)
	s := newStack(t, natsserver.NewTest(t, nil).ClientURL())
	s.start(t, "a", map[string]string{"BATCH_SIZE": "500"})
	s.start(t, "b", map[string]string{"BATCH_SIZE": "500"})

	aggs := pubtest.NewAggregates(1000)
	aggs.WriteVersions(ctx, t, s.pool, 8, 1, 10, true)
	ids := aggs.EventIDs()
	if len(ids) != 10000 {
		t.Fatalf("wrote %d events", len(ids))
	}
	s.publishedOnce(ctx, t, ids)
}

// Three replicas share the partitions; one stops while writes go on, a fourth joins,
// and the leases rebalance each time.
func TestReplicasStopAndJoinMidRun(t *testing.T) {
	t.Parallel()
	ctx := sharedtest.Context(t, 90*time.Second)
	s := newStack(t, natsserver.NewTest(t, nil).ClientURL())
	stopA := s.start(t, "a", nil)
	s.start(t, "b", nil)
	s.start(t, "c", nil)
	s.leasesReach(ctx, t, "three replicas sharing the partitions", func(l map[string]int) bool {
		return len(l) == 3 && l["a"]+l["b"]+l["c"] == 64
	})

	aggs := pubtest.NewAggregates(200)
	aggs.WriteVersions(ctx, t, s.pool, 6, 1, 3, true)
	stopA() // mid-run: rows of its partitions are still in flight or waiting
	aggs.WriteVersions(ctx, t, s.pool, 6, 4, 5, true)
	s.leasesReach(ctx, t, "b and c taking over a's partitions", func(l map[string]int) bool {
		return l["a"] == 0 && l["b"]+l["c"] == 64
	})
	s.start(t, "d", nil)
	aggs.WriteVersions(ctx, t, s.pool, 6, 6, 8, true)
	s.leasesReach(ctx, t, "d getting its share", func(l map[string]int) bool {
		return l["d"] >= 20 && l["b"]+l["c"]+l["d"] == 64
	})

	s.publishedOnce(ctx, t, aggs.EventIDs())
}

// With notifications, an event arrives long before the next poll would find it: the
// poll interval here is a minute.
func TestNotificationWakesAnIdlePublisher(t *testing.T) {
	t.Parallel()
	ctx := sharedtest.Context(t, 50*time.Second)
	s := newStack(t, natsserver.NewTest(t, nil).ClientURL())
	s.start(t, "a", map[string]string{"POLL_MIN": "1m", "POLL_MAX": "1m", "LEASE_TTL": "5s", "WAKE_MODE": "listen"})

	owner := uuid.New()
	first := pubtest.Event(t, owner, uuid.New(), 1, "")
	if err := pubtest.Write(ctx, s.pool, true, first); err != nil {
		t.Fatal(err)
	}
	// Published by the drain that follows the lease acquisition or by the
	// notification; either way the relay then sleeps a full minute.
	s.waitPublished(ctx, t, 1)

	second := pubtest.Event(t, owner, uuid.New(), 1, "")
	if err := pubtest.Write(ctx, s.pool, true, second); err != nil {
		t.Fatal(err)
	}
	// ctx ends after 50s, before the minute's poll: arriving at all proves the wake-up.
	start := time.Now()
	s.waitPublished(ctx, t, 2)
	t.Logf("woken and published %s after the commit", time.Since(start))
	pubtest.CheckExactlyOnceInOrder(t, pubtest.ReadStream(ctx, t, s.js, streamName), []uuid.UUID{first.ID, second.ID})
}

// Without notifications (as on CockroachDB) polling finds the rows.
func TestPollingWithoutNotifications(t *testing.T) {
	t.Parallel()
	ctx := sharedtest.Context(t, 30*time.Second)
	s := newStack(t, natsserver.NewTest(t, nil).ClientURL())
	s.start(t, "a", map[string]string{"WAKE_MODE": "poll"})

	aggs := pubtest.NewAggregates(20)
	aggs.WriteVersions(ctx, t, s.pool, 2, 1, 3, false)
	s.publishedOnce(ctx, t, aggs.EventIDs())
}

// A three-node cluster with the stream replicated three times: one node stops and
// comes back while the publisher works, and nothing is lost or duplicated.
func TestClusterNodeStopsAndReturns(t *testing.T) {
	t.Parallel()
	ctx := sharedtest.Context(t, 100*time.Second)
	cluster := natsserver.NewTestCluster(t, nil)
	s := newStack(t, cluster.ClientURL())
	s.start(t, "a", map[string]string{"STREAM_REPLICAS": "3", "PUBLISH_TIMEOUT": "3s"})

	aggs := pubtest.NewAggregates(100)
	aggs.WriteVersions(ctx, t, s.pool, 4, 1, 2, true)
	s.waitPublished(ctx, t, 200)

	// Stop the stream's leader: the hardest node to lose.
	var node *natsserver.Server
	leader := streamInfo(ctx, t, s.js).Cluster.Leader
	for _, n := range cluster.Servers {
		if n.Name() == leader {
			node = n
		}
	}
	if node == nil {
		t.Fatalf("stream leader %q is not a cluster node", leader)
	}
	node.Stop()
	aggs.WriteVersions(ctx, t, s.pool, 4, 3, 4, true)
	s.waitPublished(ctx, t, 400)
	if err := node.Restart(); err != nil {
		t.Fatal(err)
	}
	aggs.WriteVersions(ctx, t, s.pool, 4, 5, 6, true)
	s.publishedOnce(ctx, t, aggs.EventIDs())
	if info := streamInfo(ctx, t, s.js); info.Config.Replicas != 3 {
		t.Fatalf("stream has %d replicas, want 3", info.Config.Replicas)
	}
}

// streamInfo reads the stream's info, again while the cluster has no stream leader.
func streamInfo(ctx context.Context, t *testing.T, js jetstream.JetStream) *jetstream.StreamInfo {
	t.Helper()
	var info *jetstream.StreamInfo
	sharedtest.Eventually(t, time.Minute, func() (bool, string) {
		st, err := js.Stream(ctx, streamName)
		if err == nil {
			info, err = st.Info(ctx)
		}
		return err == nil, fmt.Sprintf("stream info: %v", err)
	})
	return info
}
