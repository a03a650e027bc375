// Package service assembles the publisher: database pool, NATS connection, stream,
// wake-up mode, leases, relay, cleanup, outbox gauges and the admin server, and runs
// them until the context ends. cmd/publisher calls Run; component tests run several
// replicas in one process with it.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/outboxtodo/outboxtodo/services/publisher/internal/cleanup"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/config"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/lease"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/metrics"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/relay"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/stream"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/wake"
	"github.com/outboxtodo/outboxtodo/shared/admin"
	"github.com/outboxtodo/outboxtodo/shared/outbox"
	"github.com/outboxtodo/outboxtodo/shared/postgres"
)

// Run runs one publisher replica until ctx is cancelled (then it finishes or abandons
// its batch within cfg.ShutdownTimeout, releases its leases and returns nil) or until a
// component fails (then it stops the others and returns the error).
// Spans of the publishes go to tp.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger, tp trace.TracerProvider) error {
	log.Info("starting publisher", "config", cfg)

	pool, err := postgres.Connect(ctx, cfg.DatabaseURL, postgres.PoolConfig{MaxConns: cfg.DBMaxConns, AppName: "publisher", NoJIT: true})
	if err != nil {
		return fmt.Errorf("connect to database: %w", err)
	}
	defer pool.Close()

	nc, err := connectNATS(cfg, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(max(cfg.BatchSize, 256)),
		jetstream.WithPublishAsyncTimeout(cfg.PublishTimeout))
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	_, err = stream.Ensure(sctx, js, stream.Spec{
		Name:              cfg.StreamName,
		SubjectPrefix:     cfg.SubjectPrefix,
		Replicas:          cfg.StreamReplicas,
		DuplicateWindow:   cfg.DuplicateWindow,
		MaxAge:            cfg.StreamMaxAge,
		MaxMsgsPerSubject: cfg.StreamMaxMsgsPerSubject,
		Partitions:        cfg.StreamPartitions,
	})
	cancel()
	if err != nil {
		return err
	}

	reg := admin.NewRegistry()
	m := metrics.New(reg)
	reg.MustRegister(postgres.PoolCollector(pool, "publisher"))

	listen, err := chooseWakeMode(ctx, cfg)
	if err != nil {
		return err
	}
	var (
		listener *wake.Listener
		wakeC    <-chan struct{}
		flag     *wake.Flag
		idler    relay.Idler
	)
	if listen {
		listener = wake.NewListener(cfg.DatabaseURL, log)
		wakeC = listener.C()
		m.WakeMode.WithLabelValues("listen").Set(1)
		log.Info("wake-up mode: LISTEN/NOTIFY, with idle polling as a safety net", "poll_max", cfg.PollMax)
	} else {
		m.WakeMode.WithLabelValues("poll").Set(1)
		log.Info("wake-up mode: polling (the database has no LISTEN or WAKE_MODE=poll)", "poll_min", cfg.PollMin, "poll_max", cfg.PollMax)
	}

	leases := lease.New(pool, cfg.ReplicaID, outbox.Partitions, cfg.LeaseTTL, log)
	leases.OnChange(func(n int) { m.LeasesHeld.Set(float64(n)) })
	if listen {
		// The relay polls at most every PollMax while idle, refreshing the mark.
		flag = wake.NewFlag(pool, cfg.ReplicaID, max(cfg.LeaseTTL, 4*cfg.PollMax),
			func() bool { return len(leases.Held()) > 0 }, log)
		idler = flag
	}
	rl := relay.New(pool, js, leases, wakeC, relay.Options{
		SubjectPrefix:  cfg.SubjectPrefix,
		BatchSize:      cfg.BatchSize,
		PublishTimeout: cfg.PublishTimeout,
		PollMin:        cfg.PollMin,
		PollMax:        cfg.PollMax,
		MaxAttempts:    cfg.MaxAttempts,
		BackoffMin:     cfg.BackoffMin,
		BackoffMax:     cfg.BackoffMax,
		ShutdownGrace:  cfg.ShutdownTimeout,
		Tracer:         tp.Tracer("github.com/outboxtodo/outboxtodo/services/publisher"),
		Idler:          idler,
	}, m, log)
	cleaner := cleanup.New(pool, leases, cfg.Retention, cfg.CleanupBatch, m, log)

	ln, err := net.Listen("tcp", cfg.AdminAddr)
	if err != nil {
		return fmt.Errorf("listen on ADMIN_ADDR %s: %w", cfg.AdminAddr, err)
	}
	adminHandler := admin.Handler(reg, ready(pool, nc), log)

	// runCtx ends on a signal or a failing component. The leases outlive the relay: they
	// are released only after the batch in flight was marked (or abandoned), so that
	// the mark is not fenced off by our own release.
	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	leaseCtx, cancelLeases := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelLeases()

	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	spawn := func(name string, c context.Context, f func(context.Context) error, after func()) {
		wg.Go(func() {
			if after != nil {
				defer after()
			}
			if err := f(c); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
				mu.Unlock()
				cancelRun()
			}
		})
	}
	spawn("leases", leaseCtx, leases.Run, cancelRun)
	spawn("relay", runCtx, rl.Run, func() {
		if flag != nil {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			flag.Clear(cctx)
			cancel()
		}
		cancelLeases()
	})
	spawn("cleanup", runCtx, func(c context.Context) error { return cleaner.Run(c, cfg.CleanupInterval) }, nil)
	if cfg.VacuumDeadRows > 0 {
		vacuumer := cleanup.NewVacuumer(pool, cfg.VacuumDeadRows, m, log)
		spawn("vacuum", runCtx, func(c context.Context) error { return vacuumer.Run(c, cfg.VacuumInterval) }, nil)
	}
	spawn("outbox stats", runCtx, func(c context.Context) error { return refreshStats(c, pool, m, cfg.StatsInterval, log) }, nil)
	spawn("admin server", runCtx, func(c context.Context) error { return admin.Serve(c, ln, adminHandler, log) }, nil)
	if listener != nil {
		spawn("listener", runCtx, listener.Run, nil)
	}
	wg.Wait()
	return errors.Join(errs...)
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

func connectNATS(cfg config.Config, log *slog.Logger) (*nats.Conn, error) {
	auth, err := cfg.NATS.Options()
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(cfg.NATSURL, append(auth,
		nats.Name("publisher "+cfg.ReplicaID),
		nats.Timeout(5*time.Second),
		// Reconnect forever: the relay's drains fail (and back off) meanwhile, and
		// readiness reports it.
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("disconnected from NATS", "error", err)
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("reconnected to NATS", "url", c.ConnectedUrlRedacted())
		}),
	)...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS: %w", err)
	}
	return nc, nil
}

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
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		qctx, cancel := context.WithTimeout(ctx, every)
		s, err := outbox.ReadStats(qctx, pool)
		cancel()
		switch {
		case err == nil:
			m.Backlog.Set(float64(s.Backlog))
			m.OldestAge.Set(s.OldestAge(time.Now()).Seconds())
			m.Retrying.Set(float64(s.Retrying))
			m.ParkedRows.Set(float64(s.Parked))
		case ctx.Err() == nil:
			log.Warn("read outbox stats", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
