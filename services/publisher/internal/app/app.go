// Package app is the publisher's composition root: New builds every dependency of one
// replica (tracing, the database pool, the NATS connection and the stream, the
// wake-up mode, leases, relay, cleanup and the metrics), Run runs its tasks until the
// context ends, and Close releases what New opened. cmd/publisher and the component
// tests, which run several replicas in one process, build the publisher through it.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outboxtodo/outboxtodo/services/publisher/internal/cleanup"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/config"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/lease"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/metrics"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/relay"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/stream"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/wake"
	"github.com/outboxtodo/outboxtodo/shared/admin"
	"github.com/outboxtodo/outboxtodo/shared/natsconn"
	"github.com/outboxtodo/outboxtodo/shared/outbox"
	"github.com/outboxtodo/outboxtodo/shared/postgres"
	"github.com/outboxtodo/outboxtodo/shared/process"
	"github.com/outboxtodo/outboxtodo/shared/telemetry"
)

// App is one publisher replica, built and not yet running.
type App struct {
	cfg      config.Config
	log      *slog.Logger
	tracing  *telemetry.Tracing
	pool     *pgxpool.Pool
	nc       *nats.Conn
	registry *prometheus.Registry
	metrics  *metrics.Metrics
	leases   *lease.Manager
	listener *wake.Listener // nil when polling
	flag     *wake.Flag     // nil when polling
	relay    *relay.Relay
	cleaner  *cleanup.Cleaner
	vacuumer *cleanup.Vacuumer // nil when VACUUM_DEAD_ROWS is 0
	closer   process.Closer
}

// New builds a replica from cfg: it connects to the database and NATS, both of which
// must answer, creates or updates the stream and chooses the wake-up mode. On error,
// what was opened is closed again.
func New(ctx context.Context, cfg config.Config, log *slog.Logger) (_ *App, err error) {
	a := &App{cfg: cfg, log: log}
	defer a.closer.CloseOnError(&err)
	if a.tracing, err = telemetry.FromEnv(ctx, "publisher", log); err != nil {
		return nil, err
	}
	a.closer.Add(a.tracing.Shutdown) // flushes the spans still buffered
	a.pool, err = postgres.Connect(ctx, cfg.DatabaseURL, postgres.PoolConfig{MaxConns: cfg.DBMaxConns, AppName: "publisher", NoJIT: true})
	if err != nil {
		return nil, fmt.Errorf("connect to database: %w", err)
	}
	a.closer.Add(func(context.Context) error { a.pool.Close(); return nil })
	js, err := a.openStream(ctx)
	if err != nil {
		return nil, err
	}
	a.registry = admin.NewRegistry()
	a.metrics = metrics.New(a.registry)
	a.registry.MustRegister(postgres.PoolCollector(a.pool, "publisher"))
	a.leases = lease.New(a.pool, cfg.ReplicaID, outbox.Partitions, cfg.LeaseTTL, log)
	a.leases.OnChange(func(n int) { a.metrics.LeasesHeld.Set(float64(n)) })
	if err := a.setUpWakeUps(ctx); err != nil {
		return nil, err
	}
	var wakeC <-chan struct{}
	var idler relay.Idler
	if a.listener != nil {
		wakeC, idler = a.listener.C(), a.flag
	}
	a.relay = relay.New(a.pool, js, a.leases, wakeC, relay.Options{
		SubjectPrefix:  cfg.SubjectPrefix,
		BatchSize:      cfg.BatchSize,
		PublishTimeout: cfg.PublishTimeout,
		PollMin:        cfg.PollMin,
		PollMax:        cfg.PollMax,
		MaxAttempts:    cfg.MaxAttempts,
		BackoffMin:     cfg.BackoffMin,
		BackoffMax:     cfg.BackoffMax,
		ShutdownGrace:  cfg.ShutdownTimeout,
		Tracer:         a.tracing.Tracer("github.com/outboxtodo/outboxtodo/services/publisher"),
		Idler:          idler,
	}, a.metrics, log)
	a.cleaner = cleanup.New(a.pool, a.leases, cfg.Retention, cfg.CleanupBatch, a.metrics, log)
	if cfg.VacuumDeadRows > 0 {
		a.vacuumer = cleanup.NewVacuumer(a.pool, cfg.VacuumDeadRows, a.metrics, log)
	}
	return a, nil
}

// openStream connects to NATS and creates or updates the stream.
func (a *App) openStream(ctx context.Context) (jetstream.JetStream, error) {
	var err error
	a.nc, err = natsconn.Connect(a.cfg.NATSURL, a.cfg.NATS, "publisher "+a.cfg.ReplicaID, a.log,
		// The relay's drains fail (and back off) while NATS is away; come back soon.
		nats.ReconnectWait(250*time.Millisecond))
	if err != nil {
		return nil, err
	}
	a.closer.Add(func(context.Context) error { a.nc.Close(); return nil })
	js, err := jetstream.New(a.nc,
		jetstream.WithPublishAsyncMaxPending(max(a.cfg.BatchSize, 256)),
		jetstream.WithPublishAsyncTimeout(a.cfg.PublishTimeout))
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err = stream.Ensure(sctx, js, stream.Spec{
		Name:              a.cfg.StreamName,
		SubjectPrefix:     a.cfg.SubjectPrefix,
		Replicas:          a.cfg.StreamReplicas,
		DuplicateWindow:   a.cfg.DuplicateWindow,
		MaxAge:            a.cfg.StreamMaxAge,
		MaxMsgsPerSubject: a.cfg.StreamMaxMsgsPerSubject,
		Partitions:        a.cfg.StreamPartitions,
	})
	return js, err
}

// setUpWakeUps chooses between LISTEN/NOTIFY and polling. With LISTEN, the listener
// wakes the relay and the flag tells writers whether this replica is idle enough to
// want a notification.
func (a *App) setUpWakeUps(ctx context.Context) error {
	listen, err := chooseWakeMode(ctx, a.cfg)
	if err != nil {
		return err
	}
	if !listen {
		a.metrics.WakeMode.WithLabelValues("poll").Set(1)
		a.log.Info("wake-up mode: polling (the database has no LISTEN or WAKE_MODE=poll)", "poll_min", a.cfg.PollMin, "poll_max", a.cfg.PollMax)
		return nil
	}
	a.listener = wake.NewListener(a.cfg.DatabaseURL, a.log)
	a.metrics.WakeMode.WithLabelValues("listen").Set(1)
	a.log.Info("wake-up mode: LISTEN/NOTIFY, with idle polling as a safety net", "poll_max", a.cfg.PollMax)
	// The relay polls at most every PollMax while idle, refreshing the mark.
	a.flag = wake.NewFlag(a.pool, a.cfg.ReplicaID, max(a.cfg.LeaseTTL, 4*a.cfg.PollMax),
		func() bool { return len(a.leases.Held()) > 0 }, a.log)
	return nil
}

// chooseWakeMode probes for LISTEN unless told to poll; WAKE_MODE=listen makes a
// database without it an error instead of a fallback.
func chooseWakeMode(ctx context.Context, cfg config.Config) (bool, error) {
	if cfg.WakeMode == config.WakePoll {
		return false, nil
	}
	ok, err := wake.Probe(ctx, cfg.DatabaseURL)
	if err != nil {
		return false, err
	}
	if !ok && cfg.WakeMode == config.WakeListen {
		return false, errors.New("WAKE_MODE=listen but the database does not support LISTEN")
	}
	return ok, nil
}

// Run runs the replica until ctx is cancelled (then it finishes or abandons its batch
// within SHUTDOWN_TIMEOUT, releases its leases and returns nil) or until a task fails
// (then it stops the others and returns the error).
func (a *App) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", a.cfg.AdminAddr)
	if err != nil {
		return fmt.Errorf("listen on ADMIN_ADDR %s: %w", a.cfg.AdminAddr, err)
	}
	// The leases outlive the relay: they are released only after the batch in flight
	// was marked (or abandoned), so that the mark is not fenced off by our own release.
	leaseCtx, releaseLeases := context.WithCancel(context.WithoutCancel(ctx))
	defer releaseLeases()
	tasks := []process.Task{
		{Name: "leases", Run: func(context.Context) error { return a.leases.Run(leaseCtx) }},
		{Name: "relay", Run: func(ctx context.Context) error {
			defer releaseLeases()
			defer a.clearIdleMark(ctx)
			return a.relay.Run(ctx)
		}},
		{Name: "cleanup", Run: func(ctx context.Context) error { return a.cleaner.Run(ctx, a.cfg.CleanupInterval) }},
		{Name: "outbox stats", Run: func(ctx context.Context) error {
			return refreshStats(ctx, a.pool, a.metrics, a.cfg.StatsInterval, a.log)
		}},
		{Name: "admin server", Run: func(ctx context.Context) error {
			return admin.Serve(ctx, ln, admin.Handler(a.registry, ready(a.pool, a.nc), a.log), a.log)
		}},
	}
	if a.vacuumer != nil {
		tasks = append(tasks, process.Task{Name: "vacuum", Run: func(ctx context.Context) error {
			return a.vacuumer.Run(ctx, a.cfg.VacuumInterval)
		}})
	}
	if a.listener != nil {
		tasks = append(tasks, process.Task{Name: "listener", Run: a.listener.Run})
	}
	return process.RunTasks(ctx, tasks...)
}

// clearIdleMark withdraws this replica's wish for notifications once the relay stopped.
func (a *App) clearIdleMark(ctx context.Context) {
	if a.flag == nil {
		return
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	a.flag.Clear(cctx)
}

// Close releases what New opened, the last opened first.
func (a *App) Close() error { return a.closer.Close() }

func ready(pool *pgxpool.Pool, nc *nats.Conn) admin.ReadyFunc {
	return func(ctx context.Context) error {
		if !nc.IsConnected() {
			return fmt.Errorf("NATS: %s", nc.Status())
		}
		if err := pool.Ping(ctx); err != nil {
			return fmt.Errorf("database: %w", err)
		}
		return nil
	}
}

// refreshStats keeps the outbox gauges current. Every replica reports the same
// whole-outbox figures; dashboards take the max.
func refreshStats(ctx context.Context, pool *pgxpool.Pool, m *metrics.Metrics, every time.Duration, log *slog.Logger) error {
	refresh := func() {
		qctx, cancel := context.WithTimeout(ctx, every)
		defer cancel()
		s, err := outbox.ReadStats(qctx, pool)
		switch {
		case err == nil:
			m.Backlog.Set(float64(s.Backlog))
			m.OldestAge.Set(s.OldestAge(time.Now()).Seconds())
			m.Retrying.Set(float64(s.Retrying))
			m.ParkedRows.Set(float64(s.Parked))
		case ctx.Err() == nil:
			log.Warn("read outbox stats", "error", err)
		}
	}
	refresh()
	process.Every(ctx, every, refresh)
	return nil
}
