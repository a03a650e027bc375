package relay

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/lease"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/metrics"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/outboxdb"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/pubtest"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/stream"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/outbox"
	"github.com/outboxtodo/outboxtodo/shared/postgres"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
	"github.com/outboxtodo/outboxtodo/tools/devstack/natsserver"
)

const streamName = "TODO_EVENTS"

// env is one test's database and NATS server.
type env struct {
	dbURL string
	pool  *pgxpool.Pool // the writers' and the checks' pool
	srv   *natsserver.Server
	js    jetstream.JetStream // the checks' client
}

func newEnv(t testing.TB) *env {
	t.Helper()
	pool, dbURL := dbtest.NewPool(t)
	srv := natsserver.NewTest(t, nil)
	e := &env{dbURL: dbURL, pool: pool, srv: srv}
	e.js, _ = e.connect(t)
	ctx := sharedtest.Context(t, 10*time.Second)
	if _, err := stream.Ensure(ctx, e.js, stream.Spec{Name: streamName, SubjectPrefix: event.DefaultSubjectPrefix,
		Replicas: 1, DuplicateWindow: 5 * time.Minute, MaxMsgsPerSubject: 100}); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) connect(t testing.TB) (jetstream.JetStream, *nats.Conn) {
	t.Helper()
	nc, err := nats.Connect(e.srv.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatalf("connect nats: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(1000), jetstream.WithPublishAsyncTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return js, nc
}

// replica is one publisher's relay and leases, with pool and connection of its own so
// that a test can kill it by closing them.
type replica struct {
	pool   *pgxpool.Pool
	nc     *nats.Conn
	leases *lease.Manager
	relay  *Relay
}

func (e *env) replica(t testing.TB, name string, ttl time.Duration, opts Options) *replica {
	t.Helper()
	ctx := sharedtest.Context(t, 10*time.Second)
	pool, err := postgres.Connect(ctx, e.dbURL, postgres.PoolConfig{MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	js, nc := e.connect(t)
	log := sharedtest.Logger(t, slog.LevelInfo).With("replica", name)
	mgr := lease.New(pool, name, outbox.Partitions, ttl, log)
	r := New(pool, js, mgr, nil, opts, metrics.New(prometheus.NewRegistry()), log)
	return &replica{pool: pool, nc: nc, leases: mgr, relay: r}
}

// replicaHoldingAll is a new replica once takeAll has given it every partition.
func (e *env) replicaHoldingAll(ctx context.Context, t testing.TB, name string, ttl time.Duration, opts Options) *replica {
	t.Helper()
	r := e.replica(t, name, ttl, opts)
	r.takeAll(ctx, t)
	return r
}

// takeAll ticks until the replica holds every partition (others' leases must expire).
func (r *replica) takeAll(ctx context.Context, t testing.TB) {
	t.Helper()
	for len(r.leases.Held()) < outbox.Partitions {
		if err := r.leases.Tick(ctx); err != nil {
			t.Fatalf("lease tick: %v", err)
		}
		if ctx.Err() != nil {
			t.Fatalf("replica holds %d partitions at the deadline", len(r.leases.Held()))
		}
	}
}

// drainAll drains until a drain claims nothing, ignoring failed drains (they are what
// some tests provoke) until ctx ends.
func (r *replica) drainAll(ctx context.Context, t *testing.T) {
	t.Helper()
	for {
		res, err := r.relay.Drain(ctx)
		if err != nil {
			t.Logf("drain: %v", err)
		} else if res.Claimed == 0 {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("still draining at the deadline: %v", ctx.Err())
		}
	}
}

// drainedInOrder drains with r until nothing is left, then checks that every row is
// published and that the stream holds ids exactly once, each aggregate's in version
// order.
func (e *env) drainedInOrder(ctx context.Context, t *testing.T, r *replica, ids []uuid.UUID) {
	t.Helper()
	r.drainAll(ctx, t)
	if n := e.unpublished(ctx, t); n != 0 {
		t.Fatalf("%d rows unpublished", n)
	}
	pubtest.CheckExactlyOnceInOrder(t, pubtest.ReadStream(ctx, t, e.js, streamName), ids)
}

func opts(batch int) Options {
	return Options{
		SubjectPrefix:  event.DefaultSubjectPrefix,
		BatchSize:      batch,
		PublishTimeout: 2 * time.Second,
		PollMin:        5 * time.Millisecond,
		PollMax:        100 * time.Millisecond,
		MaxAttempts:    3,
		BackoffMin:     time.Millisecond,
		BackoffMax:     20 * time.Millisecond,
		ShutdownGrace:  time.Second,
	}
}

func (e *env) seed(ctx context.Context, t testing.TB, aggs, versions int) []uuid.UUID {
	t.Helper()
	a := pubtest.NewAggregates(aggs)
	a.WriteVersions(ctx, t, e.pool, 4, 1, int64(versions), false)
	return a.EventIDs()
}

// write commits each event in a transaction of its own, as the API's requests do.
func (e *env) write(ctx context.Context, t testing.TB, events ...event.Envelope) {
	t.Helper()
	for _, ev := range events {
		if err := pubtest.Write(ctx, e.pool, false, ev); err != nil {
			t.Fatal(err)
		}
	}
}

// drainUntil drains with r until the outbox's statistics satisfy done, through the
// backoffs of failed rows, and returns them. A failed drain, or ctx's end before done,
// fails t.
func (e *env) drainUntil(ctx context.Context, t *testing.T, r *replica, what string, done func(outbox.Stats) bool) outbox.Stats {
	t.Helper()
	for {
		if _, err := r.relay.Drain(ctx); err != nil {
			t.Fatal(err)
		}
		stats, err := outbox.ReadStats(ctx, e.pool)
		if err != nil {
			t.Fatal(err)
		}
		if done(stats) {
			return stats
		}
		if ctx.Err() != nil {
			t.Fatalf("%s at the deadline: %+v", what, stats)
		}
	}
}

func (e *env) unpublished(ctx context.Context, t *testing.T) int {
	t.Helper()
	var n int
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM outbox WHERE published_at IS NULL`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestPublishesEveryRowOnceInVersionOrder(t *testing.T) {
	t.Parallel()
	ctx := sharedtest.Context(t, 60*time.Second)
	e := newEnv(t)
	ids := e.seed(ctx, t, 40, 5)
	r := e.replicaHoldingAll(ctx, t, "a", 5*time.Second, opts(64))
	// Full batches: each is marked while the next is claimed, which must skip it.
	var total Result
	for {
		res, err := r.relay.Drain(ctx)
		if err != nil {
			t.Fatal(err)
		}
		total.add(res)
		if res.Claimed == 0 {
			break
		}
	}
	if total != (Result{Claimed: len(ids), Published: len(ids)}) {
		t.Errorf("drains did %+v; want each of the %d rows claimed and published once", total, len(ids))
	}

	if n := e.unpublished(ctx, t); n != 0 {
		t.Fatalf("%d rows unpublished", n)
	}
	msgs := pubtest.ReadStream(ctx, t, e.js, streamName)
	pubtest.CheckExactlyOnceInOrder(t, msgs, ids)
	m := msgs[0]
	if m.Type == "" || !strings.HasPrefix(m.Subject, event.DefaultSubjectPrefix+".todo.") {
		t.Errorf("message headers or subject wrong: %+v", m)
	}
	env, err := event.Decode(m.Body)
	if err != nil {
		t.Fatalf("body is not an envelope: %v", err)
	}
	if env.ID.String() != m.ID || env.Version != m.Version || event.Subject(event.DefaultSubjectPrefix, env) != m.Subject {
		t.Errorf("envelope %s v%d does not match message %s v%d %s", env.ID, env.Version, m.ID, m.Version, m.Subject)
	}
}

// A publisher that dies after JetStream acknowledged a batch but before it marked the
// rows leaves them unpublished; the next owner publishes them again and JetStream drops
// the copies by Nats-Msg-Id.
func TestKilledBetweenPublishAndMark(t *testing.T) {
	t.Parallel()
	ctx := sharedtest.Context(t, 60*time.Second)
	e := newEnv(t)
	ids := e.seed(ctx, t, 50, 6)

	a := e.replicaHoldingAll(ctx, t, "a", time.Second, opts(100))
	a.relay.afterAcks = func() {
		// The crash: the process's connections go away; nothing is released.
		a.nc.Close()
		a.pool.Close()
	}
	if _, err := a.relay.Drain(ctx); err == nil {
		t.Fatal("drain of the killed replica succeeded")
	}
	if n := e.unpublished(ctx, t); n != len(ids) {
		t.Fatalf("%d rows unpublished after the crash, want all %d", n, len(ids))
	}
	if got := len(pubtest.ReadStream(ctx, t, e.js, streamName)); got != 50 {
		t.Fatalf("stream holds %d messages after the crash, want the first batch: version 1 of the 50 aggregates", got)
	}

	// b's own lease is long: drainAll never renews it, and on a loaded machine a drain
	// that outlived a short one had every mark fenced until the test's deadline.
	b := e.replicaHoldingAll(ctx, t, "b", 30*time.Second, opts(100)) // after a's leases expired
	e.drainedInOrder(ctx, t, b, ids)
}

// The server goes down after a batch was sent and before its PubAcks came back, and
// comes back on the same port with the same store.
func TestNATSServerRestartedMidBatch(t *testing.T) {
	t.Parallel()
	ctx := sharedtest.Context(t, 60*time.Second)
	e := newEnv(t)
	ids := e.seed(ctx, t, 60, 5)

	r := e.replicaHoldingAll(ctx, t, "a", 5*time.Second, opts(100))
	var once sync.Once
	r.relay.afterSend = func() {
		once.Do(func() {
			e.srv.Stop()
			if err := e.srv.Restart(); err != nil {
				t.Errorf("restart nats: %v", err)
			}
		})
	}
	e.drainedInOrder(ctx, t, r, ids)
}

// A replica whose lease expired (and perhaps was taken over) while its batch was in
// flight marks nothing; the new owner publishes the rows and JetStream deduplicates.
func TestExpiredLeaseCannotMark(t *testing.T) {
	t.Parallel()
	for _, takeover := range []bool{false, true} {
		name := "expired"
		if takeover {
			name = "taken over"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := sharedtest.Context(t, 60*time.Second)
			e := newEnv(t)
			ids := e.seed(ctx, t, 10, 2)
			// a's lease is short: b waits for a's heartbeat to lapse before it takes
			// every partition. b's is long, as in TestKilledBetweenPublishAndMark.
			a := e.replicaHoldingAll(ctx, t, "a", time.Second, opts(100))
			b := e.replica(t, "b", 30*time.Second, opts(100))
			a.relay.afterAcks = func() {
				// a stalls past its lease: expire it in the database, as time would.
				if _, err := e.pool.Exec(ctx, `UPDATE publisher_leases SET expires_at = now() - interval '1 second' WHERE owner = 'a'`); err != nil {
					t.Errorf("expire leases: %v", err)
				}
				if takeover {
					if err := b.leases.Tick(ctx); err != nil {
						t.Errorf("b takes over: %v", err)
					}
				}
			}
			res, err := a.relay.Drain(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// One batch, version 1 of each aggregate (version 2 waits for its PubAck).
			if res.Published != 0 || res.Fenced != len(ids)/2 {
				t.Fatalf("stale replica published %d and was fenced on %d rows; want 0 and %d", res.Published, res.Fenced, len(ids)/2)
			}
			if n := e.unpublished(ctx, t); n != len(ids) {
				t.Fatalf("%d rows unpublished, want %d", n, len(ids))
			}
			b.takeAll(ctx, t)
			e.drainedInOrder(ctx, t, b, ids)
		})
	}
}

// A row the broker refuses backs off, holds back the later versions of its aggregate
// (only), is parked at the attempt limit and goes back to the drain when retried.
func TestRejectedRowBacksOffParksAndBlocksOnlyItsAggregate(t *testing.T) {
	t.Parallel()
	ctx := sharedtest.Context(t, 60*time.Second)
	e := newEnv(t)
	owner, bad, good := uuid.New(), uuid.New(), uuid.New()
	huge := strings.Repeat("x", 2<<20) // over the server's 1 MiB max_payload
	bad1 := pubtest.Event(t, owner, bad, 1, huge)
	bad2 := pubtest.Event(t, owner, bad, 2, "")
	good1 := pubtest.Event(t, owner, good, 1, "")
	e.write(ctx, t, bad1, bad2, good1)

	r := e.replicaHoldingAll(ctx, t, "a", 30*time.Second, opts(100))
	e.drainUntil(ctx, t, r, "not parked", func(s outbox.Stats) bool { return s.Parked == 1 })

	var (
		attempts int
		lastErr  string
		parked   bool
	)
	if err := e.pool.QueryRow(ctx, `SELECT attempts, last_error, parked_at IS NOT NULL FROM outbox WHERE event_id = $1`, bad1.ID).
		Scan(&attempts, &lastErr, &parked); err != nil {
		t.Fatal(err)
	}
	if attempts != 3 || !parked || !strings.Contains(lastErr, "payload") {
		t.Fatalf("bad row: attempts %d, parked %v, last error %q; want 3, parked, a payload error", attempts, parked, lastErr)
	}
	stats, err := outbox.ReadStats(ctx, e.pool)
	if err != nil {
		t.Fatal(err)
	}
	if stats.Parked != 1 || stats.Backlog != 1 { // bad v2 waits behind the parked v1
		t.Fatalf("stats %+v: want 1 parked and 1 in the backlog", stats)
	}
	pubtest.CheckExactlyOnceInOrder(t, pubtest.ReadStream(ctx, t, e.js, streamName), []uuid.UUID{good1.ID})

	// The operator unparks it: it is tried again (and fails again here).
	if n, err := outboxdb.RetryParked(ctx, e.pool, []uuid.UUID{bad1.ID}); err != nil || n != 1 {
		t.Fatalf("retry parked: %d rows, %v", n, err)
	}
	res, err := r.relay.Drain(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Claimed != 1 || res.Failed != 1 || res.Published != 0 {
		t.Fatalf("after unparking: %+v; want v1 claimed and failed, v2 held back unclaimed", res)
	}
}

// A rejected row in a full batch holds back its aggregate's later versions in the batches
// after it too, although the next batch is claimed while this one is published: that
// claim is discarded and made again once the failure is recorded.
func TestRejectedRowBlocksItsAggregateAcrossBatches(t *testing.T) {
	t.Parallel()
	ctx := sharedtest.Context(t, 60*time.Second)
	e := newEnv(t)
	owner, bad := uuid.New(), uuid.New()
	huge := strings.Repeat("x", 2<<20) // over the server's 1 MiB max_payload
	// Oldest first, two per batch: bad v1 with good 1, then bad v2 with good 2, ...
	events := []event.Envelope{pubtest.Event(t, owner, bad, 1, huge)}
	var good []uuid.UUID
	for i := range 5 {
		g := pubtest.Event(t, owner, uuid.New(), 1, "")
		good = append(good, g.ID)
		events = append(events, g)
		if i == 0 {
			events = append(events, pubtest.Event(t, owner, bad, 2, ""))
		}
	}
	e.write(ctx, t, events...)

	r := e.replicaHoldingAll(ctx, t, "a", 30*time.Second, opts(2))
	stats := e.drainUntil(ctx, t, r, "bad v1 not parked", func(s outbox.Stats) bool { return s.Parked == 1 && s.Backlog <= 1 })
	if stats.Backlog != 1 {
		t.Fatalf("stats %+v: bad v2 should wait behind the parked v1", stats)
	}
	// bad v2 never went out ahead of v1; every other row went out once.
	pubtest.CheckExactlyOnceInOrder(t, pubtest.ReadStream(ctx, t, e.js, streamName), good)
}

// The broker refuses version 1 in its PubAck (asynchronously: the stream's message size
// limit, checked by the server), while version 2 of the same aggregate would be
// accepted. Version 2 must not reach the stream before version 1 does: it is not sent
// while version 1 is unacknowledged, in the same batch or a later one.
func TestAsyncPubAckErrorHoldsBackLaterVersions(t *testing.T) {
	t.Parallel()
	ctx := sharedtest.Context(t, 60*time.Second)
	e := newEnv(t)
	setMaxMsgSize := func(n int32) {
		t.Helper()
		st, err := e.js.Stream(ctx, streamName)
		if err != nil {
			t.Fatal(err)
		}
		cfg := st.CachedInfo().Config
		cfg.MaxMsgSize = n
		if _, err := e.js.UpdateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	setMaxMsgSize(8 << 10)

	owner, agg, other := uuid.New(), uuid.New(), uuid.New()
	v1 := pubtest.Event(t, owner, agg, 1, strings.Repeat("x", 16<<10)) // over the stream's limit
	v2 := pubtest.Event(t, owner, agg, 2, "")
	good := pubtest.Event(t, owner, other, 1, "")
	if err := pubtest.Write(ctx, e.pool, false, v1, v2, good); err != nil {
		t.Fatal(err)
	}

	r := e.replicaHoldingAll(ctx, t, "a", 30*time.Second, opts(100))
	e.drainUntil(ctx, t, r, "v1 not parked", func(s outbox.Stats) bool { return s.Parked == 1 })
	var lastErr string
	if err := e.pool.QueryRow(ctx, `SELECT last_error FROM outbox WHERE event_id = $1`, v1.ID).Scan(&lastErr); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(lastErr, "maximum") {
		t.Fatalf("v1's last error %q; want the stream's size limit", lastErr)
	}
	pubtest.CheckExactlyOnceInOrder(t, pubtest.ReadStream(ctx, t, e.js, streamName), []uuid.UUID{good.ID})

	// The limit is raised and the row retried: both versions go out, in order.
	setMaxMsgSize(-1)
	if n, err := outboxdb.RetryParked(ctx, e.pool, []uuid.UUID{v1.ID}); err != nil || n != 1 {
		t.Fatalf("retry parked: %d rows, %v", n, err)
	}
	e.drainedInOrder(ctx, t, r, []uuid.UUID{good.ID, v1.ID, v2.ID})
}

// API replicas with skewed clocks: an aggregate's later versions carry earlier
// created_at times than its first. They are published in version order all the same,
// one batch at a time or many.
func TestSkewedClocksPublishInVersionOrder(t *testing.T) {
	t.Parallel()
	for _, batch := range []int{1, 100} {
		t.Run(fmt.Sprintf("batch=%d", batch), func(t *testing.T) {
			t.Parallel()
			ctx := sharedtest.Context(t, 60*time.Second)
			e := newEnv(t)
			owner := uuid.New()
			var (
				events []event.Envelope
				ids    []uuid.UUID
			)
			for range 3 {
				agg := uuid.New()
				base := time.Now()
				for v := int64(1); v <= 4; v++ {
					ev := pubtest.Event(t, owner, agg, v, "")
					ev.OccurredAt = base.Add(-time.Duration(v) * time.Second) // each version a second "earlier"
					events = append(events, ev)
					ids = append(ids, ev.ID)
				}
			}
			e.write(ctx, t, events...)
			r := e.replicaHoldingAll(ctx, t, "a", 30*time.Second, opts(batch))
			e.drainedInOrder(ctx, t, r, ids)
		})
	}
}

// Marking updates no outbox row (an UPDATE of published_at cannot be HOT): it deletes
// the row and records the event in outbox_published.
func TestMarkDeletesTheRowAndRecordsIt(t *testing.T) {
	t.Parallel()
	ctx := sharedtest.Context(t, 60*time.Second)
	e := newEnv(t)
	ids := e.seed(ctx, t, 30, 2)
	r := e.replicaHoldingAll(ctx, t, "a", 30*time.Second, opts(100))
	r.drainAll(ctx, t)
	pubtest.CheckExactlyOnceInOrder(t, pubtest.ReadStream(ctx, t, e.js, streamName), ids)

	var left, recorded, matching int
	if err := e.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM outbox), (SELECT count(*) FROM outbox_published),
  (SELECT count(*) FROM outbox_published WHERE event_id = ANY($1) AND published_at >= created_at
     AND aggregate_type = 'todo' AND event_type = CASE aggregate_version WHEN 1 THEN 'todo.created' ELSE 'todo.updated' END)`, ids).
		Scan(&left, &recorded, &matching); err != nil {
		t.Fatal(err)
	}
	if left != 0 || recorded != len(ids) || matching != len(ids) {
		t.Fatalf("outbox holds %d rows, outbox_published %d (%d matching the events); want 0 and %d", left, recorded, matching, len(ids))
	}

	// The replica's sessions report their table statistics as they end.
	r.pool.Close()
	var upd, hot, del int64
	sharedtest.Eventually(t, 30*time.Second, func() (bool, string) {
		if err := e.pool.QueryRow(ctx, `SELECT n_tup_upd, n_tup_hot_upd, n_tup_del FROM pg_stat_user_tables WHERE relname = 'outbox'`).
			Scan(&upd, &hot, &del); err != nil {
			t.Fatal(err)
		}
		return upd+del >= int64(len(ids)), fmt.Sprintf("outbox statistics: %d updates (%d HOT), %d deletes; want %d marks", upd, hot, del, len(ids))
	})
	if upd != 0 || del != int64(len(ids)) {
		t.Fatalf("marking %d rows made %d updates (%d HOT) and %d deletes of outbox rows; want only deletes", len(ids), upd, hot, del)
	}
}
