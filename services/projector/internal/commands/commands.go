// Package commands is the projector's command line: the consumer itself (run, the
// default) and the read side's operator tools (dead letters, rebuild; the write side's
// verify, resync and restore-cutover are the API module's todoctl). Every command reads
// the same environment configuration (package config); flags only select what a tool
// acts on.
package commands

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.opentelemetry.io/otel/trace"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/config"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/consumer"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/deadletter"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/erasure"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/metrics"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/partition"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/project"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/rebuild"
	"github.com/outboxtodo/outboxtodo/shared/admin"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
	"github.com/outboxtodo/outboxtodo/shared/readmodel/ferretindex"
	"github.com/outboxtodo/outboxtodo/shared/telemetry"
)

const usage = `usage: projector [command] [flags]

commands:
  run                                   consume the stream into the read model (default)
  deadletters list [--all]              list pending dead letters (--all: redriven too)
  deadletters redrive [--id ID]...      apply dead letters to the read model again (none: all pending)
  rebuild [--database NAME] [--settle D] [--timeout D] [--batch-size N]
                                        fill a fresh read model from the stream, then switch readers

configuration comes from the environment (NATS_URL, MONGODB_URI, ...). verify, resync and
restore-cutover are todoctl's.
`

// Run runs the command named by args[0] (run when absent), printing results to out.
func Run(ctx context.Context, log *slog.Logger, args []string, out io.Writer) error {
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	if cmd == "help" {
		_, err := io.WriteString(out, usage)
		return err
	}
	cfg, err := config.Load()
	if err != nil {
		return err
	}
	switch cmd {
	case "run":
		log.Info("starting", "config", cfg)
		return runTraced(ctx, cfg, log)
	case "deadletters":
		return deadLetters(ctx, cfg, args, out)
	case "rebuild":
		return runRebuild(ctx, cfg, log, args, out)
	}
	return fmt.Errorf("unknown command %q\n%s", cmd, usage)
}

// connectMongo opens the process's one pooled client and checks the server answers.
func connectMongo(ctx context.Context, cfg config.Config) (*mongo.Client, error) {
	wc, err := cfg.WriteConcern()
	if err != nil {
		return nil, err
	}
	client, err := mongo.Connect(options.Client().ApplyURI(cfg.MongoURI).SetWriteConcern(wc).
		SetServerSelectionTimeout(cfg.MongoTimeout).SetConnectTimeout(cfg.MongoTimeout).SetAppName("projector"))
	if err != nil {
		return nil, fmt.Errorf("mongodb client: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, cfg.MongoTimeout)
	defer cancel()
	if err := client.Ping(pctx, nil); err != nil {
		_ = client.Disconnect(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("ping mongodb: %w", err)
	}
	return client, nil
}

func disconnect(ctx context.Context, c *mongo.Client) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = c.Disconnect(dctx)
}

// connectNATS reconnects forever: a broker restart must not stop the projector.
func connectNATS(cfg config.Config, log *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	auth, err := cfg.NATS.Options()
	if err != nil {
		return nil, nil, err
	}
	nc, err := nats.Connect(cfg.NATSURL, append(auth, nats.Name("projector"), nats.MaxReconnects(-1), nats.Timeout(5*time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: our own Close
				log.Warn("nats disconnected", "error", err)
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) { log.Info("nats reconnected") }))...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to nats: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}

func consumerConfig(cfg config.Config) consumer.Config {
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

// runTraced runs the consumer with tracing set up from the environment.
func runTraced(ctx context.Context, cfg config.Config, log *slog.Logger) (err error) {
	tracing, err := telemetry.FromEnv(ctx, "projector", log)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		err = errors.Join(err, tracing.Shutdown(sctx))
	}()
	return runConsumer(ctx, cfg, log, tracing.Provider)
}

func runConsumer(ctx context.Context, cfg config.Config, log *slog.Logger, tp trace.TracerProvider) error {
	client, err := connectMongo(ctx, cfg)
	if err != nil {
		return err
	}
	defer disconnect(ctx, client)
	store := readmodel.NewStore(client, cfg.MongoDatabase)
	ictx, cancel := context.WithTimeout(ctx, cfg.MongoTimeout)
	active, err := store.Active(ictx)
	if err == nil {
		err = readmodel.EnsureIndexes(ictx, active, store.Control())
	}
	cancel()
	if err != nil {
		return err
	}
	if cfg.FerretDBPostgreSQLURL != "" {
		// Longer than one MongoDB operation: an index over an existing large
		// collection takes a while to build.
		fctx, cancel := context.WithTimeout(ctx, ferretIndexTimeout)
		rep, err := ferretindex.Ensure(fctx, cfg.FerretDBPostgreSQLURL, active, store.Control())
		cancel()
		if err != nil {
			return err
		}
		rep.Log(log)
	}
	nc, js, err := connectNATS(cfg, log)
	if err != nil {
		return err
	}
	defer nc.Close()

	reg := admin.NewRegistry()
	m := metrics.New(reg)
	cc := consumerConfig(cfg)
	cc.Tracer = tp.Tracer("github.com/outboxtodo/outboxtodo/services/projector")
	cc.ShutdownTimeout = cfg.ShutdownTimeout
	member, err := memberName()
	if err != nil {
		return err
	}
	c := partition.New(partition.Config{Consumer: cc, SubjectPrefix: cfg.SubjectPrefix, Member: member, Bucket: cfg.MembersBucket,
		MemberTTL: cfg.MemberTTL, StatsInterval: cfg.StatsInterval}, js, store, m, log)
	ready := func(ctx context.Context) error {
		// Holding partitions or a standby ready to take some: both are ready.
		if !c.Ready() {
			return fmt.Errorf("not a member of %s yet (stream %s)", cfg.MembersBucket, cfg.Stream)
		}
		if !nc.IsConnected() {
			return fmt.Errorf("nats: %s", nc.Status())
		}
		if err := client.Ping(ctx, nil); err != nil {
			return fmt.Errorf("mongodb: %w", err)
		}
		return nil
	}
	ln, err := net.Listen("tcp", cfg.AdminAddr)
	if err != nil {
		return fmt.Errorf("admin listen %s: %w", cfg.AdminAddr, err)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	adminDone := make(chan error, 1)
	go func() { adminDone <- admin.Serve(runCtx, ln, admin.Handler(reg, ready, log), log) }()

	gaugesDone := make(chan struct{})
	go func() {
		defer close(gaugesDone)
		partitionGauges(runCtx, js, cfg.Stream, cfg.Durable, c.Held, m, cfg.StatsInterval, log)
	}()
	defer func() { stop(); <-gaugesDone }()

	eraser := erasure.New(erasure.Config{Stream: cfg.Stream, SubjectPrefix: cfg.SubjectPrefix, Durable: cfg.Durable + "-erasure"}, js, store, log)
	erasureDone := make(chan struct{})
	go func() {
		defer close(erasureDone)
		eraser.Run(runCtx)
	}()
	defer func() { stop(); <-erasureDone }()

	consErr := make(chan error, 1)
	go func() { consErr <- c.Run(runCtx) }()

	var runErr error
	select {
	case runErr = <-consErr:
		stop()
		if err := <-adminDone; err != nil {
			runErr = errors.Join(runErr, err)
		}
	case runErr = <-adminDone:
		stop()
		runErr = errors.Join(runErr, waitOrTimeout(consErr, cfg.ShutdownTimeout+releaseMargin))
	}
	if ctx.Err() != nil && runErr == nil {
		log.Info("shutting down")
	}
	return runErr
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

// ferretIndexTimeout bounds the creation of the FerretDB indexes at start.
const ferretIndexTimeout = 5 * time.Minute

// releaseMargin is the time the consumer has, past SHUTDOWN_TIMEOUT for its batch in
// hand, to nack what it still holds and flush its acknowledgements.
const releaseMargin = 3 * time.Second

func waitOrTimeout(errc <-chan error, d time.Duration) error {
	select {
	case err := <-errc:
		return err
	case <-time.After(d):
		return fmt.Errorf("consumer did not stop within %s", d)
	}
}

func deadLetters(ctx context.Context, cfg config.Config, args []string, out io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("deadletters: want list or redrive\n%s", usage)
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("deadletters "+sub, flag.ContinueOnError)
	all := fs.Bool("all", false, "list redriven dead letters too")
	var ids []string
	fs.Func("id", "dead letter id to redrive (repeatable; none: all pending)", func(id string) error {
		ids = append(ids, id)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return err
	}
	client, err := connectMongo(ctx, cfg)
	if err != nil {
		return err
	}
	defer disconnect(ctx, client)
	store := deadletter.New(readmodel.NewStore(client, cfg.MongoDatabase).Control())
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	switch sub {
	case "list":
		dls, err := store.List(ctx, *all)
		if err != nil {
			return err
		}
		for _, dl := range dls {
			state := "pending"
			if dl.RedrivenAt != nil {
				state = "redriven " + dl.RedrivenAt.Format(time.RFC3339)
			}
			fmt.Fprintf(out, "%s\t%s\t%s\tdeliveries=%d\t%s\t%s\n\t%s\n", dl.ID, dl.DeadAt.Format(time.RFC3339), dl.Subject,
				dl.Deliveries, state, dl.Error, truncate(string(dl.Data), 300))
		}
		fmt.Fprintf(out, "%d dead letters\n", len(dls))
		return nil
	case "redrive":
		active, err := readmodel.NewStore(client, cfg.MongoDatabase).Active(ctx)
		if err != nil {
			return err
		}
		outcomes, err := store.Redrive(ctx, project.New(active, 1).ApplyRaw, ids)
		failed := 0
		for _, o := range outcomes {
			if o.Err != nil {
				failed++
				fmt.Fprintf(out, "failed   %s: %v\n", o.ID, o.Err)
				continue
			}
			fmt.Fprintf(out, "redriven %s\n", o.ID)
		}
		if err != nil {
			return err
		}
		if failed > 0 {
			return fmt.Errorf("%d of %d dead letters failed again and stay pending", failed, len(outcomes))
		}
		return nil
	}
	return fmt.Errorf("deadletters: unknown subcommand %q", sub)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func runRebuild(ctx context.Context, cfg config.Config, log *slog.Logger, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("rebuild", flag.ContinueOnError)
	name := fs.String("database", cfg.MongoDatabase+"_"+time.Now().UTC().Format("20060102150405"), "fresh database to fill")
	settle := fs.Duration("settle", cfg.FetchWait+cfg.MongoTimeout+time.Second, "time live projectors may keep using the old pointer")
	timeout := fs.Duration("timeout", time.Hour, "bound on the whole rebuild")
	batch := fs.Int("batch-size", rebuild.DefaultBatchSize, "messages per fetch of the rebuild consumer")
	if err := fs.Parse(args); err != nil {
		return err
	}
	client, err := connectMongo(ctx, cfg)
	if err != nil {
		return err
	}
	defer disconnect(ctx, client)
	nc, js, err := connectNATS(cfg, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	if *batch < 1 {
		return fmt.Errorf("rebuild: --batch-size %d: want at least 1", *batch)
	}
	store := readmodel.NewStore(client, cfg.MongoDatabase)
	res, err := rebuild.Run(ctx, rebuild.Config{Consumer: consumerConfig(cfg), BatchSize: *batch, Database: *name, Settle: *settle, Timeout: *timeout,
		FerretDBPostgreSQLURL: cfg.FerretDBPostgreSQLURL}, js, store, log)
	if err != nil {
		return err
	}
	previous := res.Previous + " (drop it when no longer needed)"
	if res.Previous == store.Control().Name() {
		// Dropping it would take the pointer just written, and the readers back to it.
		previous = fmt.Sprintf("%s, the control database (keep it: it holds the pointer and the dead letters; drop only its %s, %s, %s and %s collections when no longer needed)",
			res.Previous, readmodel.CollUsers, readmodel.CollTodos, readmodel.CollStats, readmodel.CollProjection)
	}
	fmt.Fprintf(out, "rebuilt %s from the newest message of each aggregate (%d messages, stream sequence %d) in %s (%.0f messages/s); readers switched from %s\n",
		res.Database, res.Messages, res.Events, res.CatchUp.Round(time.Millisecond), res.MessagesPerSecond, previous)
	return nil
}
