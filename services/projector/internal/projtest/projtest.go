// Package projtest gives the projector's tests their real servers and test data: an
// embedded FerretDB (PostgreSQL backend) and an in-process JetStream server of the
// test's own, a stream shaped like the publisher's, and a World that plays the API,
// producing the events of a sequence of writes and the state they lead to.
//
// Only tests import it; it never ends up in the projector binary.
package projtest

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/consumer"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/metrics"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
	"github.com/outboxtodo/outboxtodo/shared/readmodel/ferretindex"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
	"github.com/outboxtodo/outboxtodo/tools/devstack/ferret"
	"github.com/outboxtodo/outboxtodo/tools/devstack/natsserver"

	"github.com/prometheus/client_golang/prometheus"
)

// Prefix is the subject prefix of the test streams.
const Prefix = event.DefaultSubjectPrefix

// Env is one test's servers and clients.
type Env struct {
	Ferret  *ferret.Server
	Mongo   *mongo.Client
	NATS    *natsserver.Server
	JS      jetstream.JetStream
	Stream  string
	Control string // the control database, also the first read model
	Store   *readmodel.Store
	Log     *slog.Logger
}

// Partitions is the partition count of the test streams.
const Partitions = 8

// New starts the servers, creates the stream (newest 100 messages per subject, no max
// age, partitioned by owner, like the publisher's) and connects one pooled client to
// each.
func New(t testing.TB) *Env { return newEnv(t, Partitions) }

// NewUnpartitioned is New with the stream of earlier releases, without the partition
// transform (see Partition).
func NewUnpartitioned(t testing.TB) *Env { return newEnv(t, 0) }

func newEnv(t testing.TB, partitions int) *Env {
	t.Helper()
	e := &Env{Ferret: ferret.StartTest(t), NATS: natsserver.NewTest(t, nil), Stream: "TODO_EVENTS", Control: "todo_read",
		Log: sharedtest.Logger(t, slog.LevelWarn)}
	e.Mongo = e.Ferret.Client(t)
	e.Store = readmodel.NewStore(e.Mongo, e.Control)
	e.Database(t, e.Control)
	_, e.JS = e.Connect(t)
	cfg := jetstream.StreamConfig{
		Name:              e.Stream,
		Subjects:          []string{event.StreamSubjects(Prefix)},
		MaxMsgsPerSubject: 100,
		Duplicates:        2 * time.Minute,
		Storage:           jetstream.FileStorage,
	}
	if partitions > 0 {
		cfg.SubjectTransform = event.PartitionTransform(Prefix, partitions)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := e.JS.CreateStream(ctx, cfg); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	return e
}

// Connect opens a connection of the test's own to its NATS server, one that
// reconnects forever and soon, as the projector's does, closed when the test ends.
func (e *Env) Connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return natsserver.Connect(t, e.NATS.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
}

// Setenv points the projector's configuration (package config reads it from the
// environment) at the test's servers and its control database, with the short waits
// of ConsumerConfig.
func (e *Env) Setenv(t testing.TB) {
	t.Setenv("NATS_URL", e.NATS.ClientURL())
	t.Setenv("MONGODB_URI", e.Ferret.URI())
	t.Setenv("MONGODB_DATABASE", e.Control)
	t.Setenv("FETCH_WAIT", "200ms")
	t.Setenv("STATS_INTERVAL", "200ms")
}

// ConsumerInfo is the server's info on the stream's consumer durable.
func (e *Env) ConsumerInfo(durable string) (*jetstream.ConsumerInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := e.JS.Consumer(ctx, e.Stream, durable)
	if err != nil {
		return nil, err
	}
	return c.Info(ctx)
}

// Partition adds the partition transform to the stream, as an upgraded publisher does.
func (e *Env) Partition(t testing.TB, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.JS.Stream(ctx, e.Stream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.SubjectTransform = event.PartitionTransform(Prefix, n)
	if _, err := e.JS.UpdateStream(ctx, cfg); err != nil {
		t.Fatalf("partition the stream: %v", err)
	}
}

// Database prepares the read-model database name as the projector does at start: the
// read model's indexes, and FerretDB's GIN indexes on its backing tables (with those of
// the control database).
func (e *Env) Database(t testing.TB, name string) *mongo.Database {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, control := e.Mongo.Database(name), e.Mongo.Database(e.Control)
	if err := ferretindex.EnsureAll(ctx, e.Ferret.PostgreSQLURL(), db, control, e.Log); err != nil {
		t.Fatalf("indexes: %v", err)
	}
	return db
}

// ConsumerConfig is a consumer config fit for tests: short waits, small batches.
func (e *Env) ConsumerConfig(durable string) consumer.Config {
	return consumer.Config{
		Stream:         e.Stream,
		Durable:        durable,
		FilterSubjects: []string{event.PartitionedSubjects(Prefix)},
		AckWait:        10 * time.Second,
		MaxDeliver:     3,
		BackOff:        nil,
		MaxAckPending:  200,
		BatchSize:      50,
		FetchWait:      200 * time.Millisecond,
		WriteTimeout:   3 * time.Second,
		Concurrency:    8,
		StatsInterval:  200 * time.Millisecond,
	}
}

// Replica is one running consumer.
type Replica struct {
	Metrics *metrics.Metrics
	Reg     *prometheus.Registry
	stop    func()
}

// Stop stops the replica and waits for it.
func (r *Replica) Stop() { r.stop() }

// Start runs a consumer replica until Stop or the end of the test.
func (e *Env) Start(t testing.TB, cfg consumer.Config) *Replica {
	t.Helper()
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	c := consumer.New(cfg, e.JS, e.Store, m, e.Log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("consumer: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return &Replica{Metrics: m, Reg: reg, stop: stop}
}

// Publish publishes events as the publisher does (sharedtest.PublishEvents).
func (e *Env) Publish(t testing.TB, events ...event.Envelope) {
	t.Helper()
	sharedtest.PublishEvents(t, e.JS, Prefix, events...)
}

// PublishRedelivery publishes events again without a message id, so that the
// duplicate window does not drop them: a redelivery from the consumer's point of view.
func (e *Env) PublishRedelivery(t testing.TB, events ...event.Envelope) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, ev := range events {
		b, err := ev.Encode()
		if err == nil {
			_, err = e.JS.Publish(ctx, event.Subject(Prefix, ev), b)
		}
		if err != nil {
			t.Fatalf("publish %s: %v", ev.ID, err)
		}
	}
}
