// Package app is the projector's composition root: New builds every dependency of one
// replica (tracing, the MongoDB client and the read model's indexes, FerretDB's when
// configured, the NATS connection, the metrics, the partition group and the erasure of
// deleted users), Run runs its tasks until the context ends, and Close releases what
// New opened. cmd/projector and the end-to-end tests build the projector through it;
// the operator commands connect through ConnectMongo and ConnectNATS as it does.
package app

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/config"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/consumer"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/erasure"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/metrics"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/partition"
	"github.com/outboxtodo/outboxtodo/shared/admin"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/mongoconn"
	"github.com/outboxtodo/outboxtodo/shared/natsconn"
	"github.com/outboxtodo/outboxtodo/shared/process"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
	"github.com/outboxtodo/outboxtodo/shared/readmodel/ferretindex"
	"github.com/outboxtodo/outboxtodo/shared/telemetry"
)

// App is one projector replica, built and not yet running.
type App struct {
	cfg      config.Config
	log      *slog.Logger
	tracing  *telemetry.Tracing
	client   *mongo.Client
	store    *readmodel.Store
	nc       *nats.Conn
	js       jetstream.JetStream
	registry *prometheus.Registry
	metrics  *metrics.Metrics
	group    *partition.Group
	eraser   *erasure.Eraser
	closer   process.Closer
}

// New builds a replica from cfg: it connects to MongoDB, which must answer, creates
// the read model's indexes (and FerretDB's, with FERRETDB_POSTGRESQL_URL), and
// connects to NATS. On error, what was opened is closed again.
func New(ctx context.Context, cfg config.Config, log *slog.Logger) (_ *App, err error) {
	a := &App{cfg: cfg, log: log}
	defer a.closer.CloseOnError(&err)
	if a.tracing, err = telemetry.FromEnv(ctx, "projector", log); err != nil {
		return nil, err
	}
	a.closer.Add(a.tracing.Shutdown) // flushes the spans still buffered
	if a.client, err = ConnectMongo(ctx, cfg); err != nil {
		return nil, err
	}
	a.closer.Add(func(ctx context.Context) error { return mongoconn.Disconnect(ctx, a.client) })
	a.store = readmodel.NewStore(a.client, cfg.MongoDatabase)
	if err := a.ensureIndexes(ctx); err != nil {
		return nil, err
	}
	if a.nc, a.js, err = ConnectNATS(cfg, log); err != nil {
		return nil, err
	}
	a.closer.Add(func(context.Context) error { a.nc.Close(); return nil })
	a.registry = admin.NewRegistry()
	a.metrics = metrics.New(a.registry)
	cc := ConsumerConfig(cfg)
	cc.Tracer = a.tracing.Tracer("github.com/outboxtodo/outboxtodo/services/projector")
	cc.ShutdownTimeout = cfg.ShutdownTimeout
	member, err := memberName()
	if err != nil {
		return nil, err
	}
	a.group = partition.New(partition.Config{Consumer: cc, SubjectPrefix: cfg.SubjectPrefix, Member: member, Bucket: cfg.MembersBucket,
		MemberTTL: cfg.MemberTTL, StatsInterval: cfg.StatsInterval}, a.js, a.store, a.metrics, log)
	a.eraser = erasure.New(erasure.Config{Stream: cfg.Stream, SubjectPrefix: cfg.SubjectPrefix, Durable: cfg.Durable + "-erasure"}, a.js, a.store, log)
	return a, nil
}

// ensureIndexes creates the indexes of the active read model and of the control
// database, and FerretDB's when its PostgreSQL database is configured.
func (a *App) ensureIndexes(ctx context.Context) error {
	actx, cancel := context.WithTimeout(ctx, a.cfg.MongoTimeout)
	active, err := a.store.Active(actx)
	cancel()
	if err != nil {
		return err
	}
	// Longer than one MongoDB operation: an index over an existing large collection
	// takes a while to build.
	ictx, cancel := context.WithTimeout(ctx, indexTimeout)
	defer cancel()
	return ferretindex.EnsureAll(ictx, a.cfg.FerretDBPostgreSQLURL, active, a.store.Control(), a.log)
}

// indexTimeout bounds the creation of the indexes at start.
const indexTimeout = 5 * time.Minute

// ConnectMongo opens the process's one pooled MongoDB client, writing with the read
// model's write concern (config.Config.WriteConcern), and checks that a server answers
// within MONGODB_TIMEOUT.
func ConnectMongo(ctx context.Context, cfg config.Config) (*mongo.Client, error) {
	wc, err := cfg.WriteConcern()
	if err != nil {
		return nil, err
	}
	return mongoconn.Connect(ctx, cfg.MongoURI, mongoconn.Options{AppName: "projector", Timeout: cfg.MongoTimeout, WriteConcern: wc, Ping: true})
}

// ConnectNATS connects to NATS (natsconn.Connect: it reconnects forever, so a broker
// restart does not stop the projector) and opens JetStream on the connection.
func ConnectNATS(cfg config.Config, log *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := natsconn.Connect(cfg.NATSURL, cfg.NATS, "projector", log)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}

// ConsumerConfig is the consumer of cfg's stream and durable, as a replica's
// partitions and a rebuild consume it.
func ConsumerConfig(cfg config.Config) consumer.Config {
	return consumer.Config{
		Stream:         cfg.Stream,
		Durable:        cfg.Durable,
		FilterSubjects: []string{event.StreamSubjects(cfg.SubjectPrefix), event.PartitionedSubjects(cfg.SubjectPrefix)},
		AckWait:        cfg.AckWait,
		MaxDeliver:     cfg.MaxDeliver,
		BackOff:        cfg.BackOff,
		MaxAckPending:  cfg.MaxAckPending,
		BatchSize:      cfg.BatchSize,
		FetchWait:      cfg.FetchWait,
		WriteTimeout:   cfg.MongoTimeout,
		Concurrency:    cfg.WriteConcurrency,
		StatsInterval:  cfg.StatsInterval,
	}
}

// memberName names this process in the membership bucket: the host (the pod) and a
// random suffix, so that a restarted process is a new member.
func memberName() (string, error) {
	host, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("member name: %w", err)
	}
	id, err := uuid.NewRandom()
	if err != nil {
		return "", fmt.Errorf("member name: %w", err)
	}
	return strings.NewReplacer(".", "-", "*", "-", ">", "-", " ", "-").Replace(host) + "-" + id.String()[:8], nil
}

// Run runs the replica until ctx is cancelled (then the consumer finishes its batches
// within SHUTDOWN_TIMEOUT and hands its partitions over, and Run returns nil) or until
// a task fails (then it stops the others and returns the error).
func (a *App) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", a.cfg.AdminAddr)
	if err != nil {
		return fmt.Errorf("admin listen %s: %w", a.cfg.AdminAddr, err)
	}
	err = process.RunTasks(ctx,
		process.Task{Name: "consumer", Run: a.consume},
		process.Task{Name: "erasure", Run: func(ctx context.Context) error { a.eraser.Run(ctx); return nil }},
		process.Task{Name: "admin server", Run: func(ctx context.Context) error {
			return admin.Serve(ctx, ln, admin.Handler(a.registry, a.ready, a.log), a.log)
		}},
	)
	if ctx.Err() != nil && err == nil {
		a.log.Info("shutting down")
	}
	return err
}

// consume runs the partition group until ctx ends, then gives it SHUTDOWN_TIMEOUT and
// releaseMargin to stop: a consumer that does not is reported, so that the process
// still exits within the pod's grace period.
func (a *App) consume(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- a.group.Run(ctx) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return waitOrTimeout(errc, a.cfg.ShutdownTimeout+releaseMargin)
	}
}

// releaseMargin is the time the consumer has, past SHUTDOWN_TIMEOUT for its batch in
// hand, to nack what it still holds and flush its acknowledgements.
const releaseMargin = 3 * time.Second

// waitOrTimeout returns the error that comes on errc, or one of its own after d.
func waitOrTimeout(errc <-chan error, d time.Duration) error {
	select {
	case err := <-errc:
		return err
	case <-time.After(d):
		return fmt.Errorf("did not stop within %s", d)
	}
}

// ready reports whether the replica is a live member of the group with both servers
// connected. Holding partitions or a standby ready to take some: both are ready.
func (a *App) ready(ctx context.Context) error {
	if !a.group.Ready() {
		return fmt.Errorf("not a member of %s yet (stream %s)", a.cfg.MembersBucket, a.cfg.Stream)
	}
	if !a.nc.IsConnected() {
		return fmt.Errorf("nats: %s", a.nc.Status())
	}
	if err := a.client.Ping(ctx, nil); err != nil {
		return fmt.Errorf("mongodb: %w", err)
	}
	return nil
}

// Close releases what New opened, the last opened first.
func (a *App) Close() error { return a.closer.Close() }
