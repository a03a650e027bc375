// Package app is the API's composition root: New builds every dependency from the
// configuration (tracing, the two PostgreSQL pools, the store, the read side, the HTTP
// handler), Run serves the API and admin ports and sweeps expired idempotency keys
// until its context ends, and Close releases what New opened. cmd/api and the
// end-to-end tests build the API through it, the same way.
package app

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outboxtodo/outboxtodo/services/api/internal/config"
	"github.com/outboxtodo/outboxtodo/services/api/internal/httpapi"
	"github.com/outboxtodo/outboxtodo/services/api/internal/password"
	"github.com/outboxtodo/outboxtodo/services/api/internal/postgres"
	"github.com/outboxtodo/outboxtodo/shared/admin"
	"github.com/outboxtodo/outboxtodo/shared/outbox"
	sharedpg "github.com/outboxtodo/outboxtodo/shared/postgres"
	"github.com/outboxtodo/outboxtodo/shared/process"
	"github.com/outboxtodo/outboxtodo/shared/telemetry"
)

// App is one API process, built and not yet running.
type App struct {
	cfg      config.Config
	log      *slog.Logger
	tracing  *telemetry.Tracing
	pool     *pgxpool.Pool // the writes and reads of the routes
	syncPool *pgxpool.Pool // /health/sync's outbox statistics
	store    *postgres.Store
	read     *readSide
	metrics  *prometheus.Registry
	handler  http.Handler
	closer   process.Closer
}

// New builds the API from cfg. It connects to PostgreSQL, which must answer; MongoDB
// and NATS need not (see readSide). On error, what was opened is closed again.
func New(ctx context.Context, cfg config.Config, log *slog.Logger) (_ *App, err error) {
	a := &App{cfg: cfg, log: log}
	defer a.closer.CloseOnError(&err)
	if a.tracing, err = telemetry.FromEnv(ctx, "api", log); err != nil {
		return nil, err
	}
	a.closer.Add(a.tracing.Shutdown) // flushes the spans still buffered
	if err := a.openPostgres(ctx); err != nil {
		return nil, err
	}
	if a.read, err = a.openReadSide(ctx); err != nil {
		return nil, err
	}
	a.metrics = admin.NewRegistry()
	a.metrics.MustRegister(sharedpg.PoolCollector(a.pool, "api"), sharedpg.PoolCollector(a.syncPool, "api-sync"))
	if a.handler, err = httpapi.New(a.handlerOptions()); err != nil {
		return nil, err
	}
	return a, nil
}

// openPostgres opens the write pool, whose store decides whether writes notify the
// publisher, and the small pool of /health/sync: that route is public, so its outbox
// statistics run on connections of their own and its callers can never take
// connections from the writes.
func (a *App) openPostgres(ctx context.Context) (err error) {
	a.pool, err = sharedpg.Connect(ctx, a.cfg.DatabaseURL, sharedpg.PoolConfig{
		MaxConns:         a.cfg.DBMaxConns,
		AppName:          "api",
		StatementTimeout: a.cfg.RequestTimeout,
	})
	if err != nil {
		return err
	}
	a.closer.Add(closePool(a.pool))
	notify, err := outboxNotify(ctx, a.cfg.OutboxNotify, a.pool)
	if err != nil {
		return err
	}
	a.log.Info("outbox notifications", "enabled", notify, "setting", a.cfg.OutboxNotify)
	a.store = postgres.New(a.pool, notify, postgres.MaxTodosPerUser(a.cfg.MaxTodosPerUser))
	a.syncPool, err = sharedpg.Connect(ctx, a.cfg.DatabaseURL, sharedpg.PoolConfig{
		MaxConns:         syncPoolConns,
		AppName:          "api-sync",
		StatementTimeout: syncTimeout,
	})
	if err != nil {
		return err
	}
	a.closer.Add(closePool(a.syncPool))
	return nil
}

func closePool(pool *pgxpool.Pool) func(context.Context) error {
	return func(context.Context) error { pool.Close(); return nil }
}

// The sync report's budget: one report serves a replica's /health/sync callers for
// syncReportTTL; its PostgreSQL statements run on syncPoolConns connections of their
// own, each bounded by syncTimeout (also each source's timeout in the report).
const (
	syncReportTTL = time.Second
	syncPoolConns = 2
	syncTimeout   = 2 * time.Second
)

// outboxNotify decides whether writes send the publisher's wake-up notification.
func outboxNotify(ctx context.Context, setting string, pool *pgxpool.Pool) (bool, error) {
	switch setting {
	case "on":
		return true, nil
	case "off":
		return false, nil
	}
	probeCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return outbox.NotifySupported(probeCtx, pool)
}

func (a *App) handlerOptions() httpapi.Options {
	cfg := a.cfg
	return httpapi.Options{
		Store:               a.store,
		ReadModel:           a.read.readModel,
		LeaderboardCacheTTL: cfg.LeaderboardCacheTTL,
		SyncReport:          a.read.reporter.Report,
		SyncReportTTL:       syncReportTTL,
		TokenTTL:            cfg.TokenTTL,
		AuthCacheTTL:        cfg.AuthCacheTTL,
		AuthCacheSize:       cfg.AuthCacheSize,
		Checks:              append([]httpapi.Check{{Name: "postgres", Timeout: 2 * time.Second, Fn: a.store.Ping}}, a.read.checks...),
		Log:                 a.log,
		Metrics:             a.metrics,
		RequestTimeout:      cfg.RequestTimeout,
		MaxBodyBytes:        cfg.MaxBodyBytes,
		CORSAllowedOrigins:  cfg.CORSAllowedOrigins,
		CursorKey:           a.cursorKey(),
		RateLimitPerIP:      httpapi.RateLimit{PerSecond: cfg.RateLimitPerIP, Burst: cfg.RateLimitPerIPBurst},
		RateLimitPerToken:   httpapi.RateLimit{PerSecond: cfg.RateLimitPerToken, Burst: cfg.RateLimitPerTokenBurst},
		RateLimitKeys:       cfg.RateLimitKeys,
		TrustedProxies:      cfg.TrustedProxyPrefixes,
		TracerProvider:      a.tracing.Provider,
		PasswordHash: password.Params{
			Memory: cfg.PasswordHashMemory, Time: cfg.PasswordHashTime, Threads: cfg.PasswordHashThreads,
		},
		PasswordHashConcurrency: cfg.PasswordHashConcurrency,
		SignInPerEmail:          cfg.SignInPerEmail,
		SignInPerAddress:        cfg.SignInPerAddress,
		SignInWindow:            cfg.SignInWindow,
		ReadYourWritesWait:      cfg.ReadYourWritesWait,
		PublicURL:               cfg.PublicURL,
	}
}

// cursorKey is CURSOR_SECRET, or a random key of this process when it is not set.
func (a *App) cursorKey() []byte {
	if a.cfg.CursorSecret != "" {
		return []byte(a.cfg.CursorSecret)
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key) // crypto/rand.Read never fails; it crashes the program instead
	a.log.Warn("CURSOR_SECRET is not set: pagination cursors are keyed by a random key of this process " +
		"and fail with invalid-cursor after a restart or on another replica; set the same CURSOR_SECRET on every replica")
	return key
}

// Run listens on API_ADDR and ADMIN_ADDR and serves until ctx ends (then in-flight
// requests drain for up to SHUTDOWN_TIMEOUT) or until a server fails (then the others
// stop too). It returns nil after a clean stop.
func (a *App) Run(ctx context.Context) error {
	apiLn, err := net.Listen("tcp", a.cfg.APIAddr)
	if err != nil {
		return fmt.Errorf("listen on API_ADDR: %w", err)
	}
	adminLn, err := net.Listen("tcp", a.cfg.AdminAddr)
	if err != nil {
		_ = apiLn.Close()
		return fmt.Errorf("listen on ADMIN_ADDR: %w", err)
	}
	srv := httpapi.NewServer(a.handler, httpapi.ServerLimits{
		ReadHeaderTimeout: a.cfg.ReadHeaderTimeout,
		ReadTimeout:       a.cfg.RequestTimeout,
		// The handler answers within RequestTimeout; the margin lets it write the answer.
		WriteTimeout:   a.cfg.RequestTimeout + 5*time.Second,
		IdleTimeout:    a.cfg.IdleTimeout,
		MaxHeaderBytes: a.cfg.MaxHeaderBytes,
	}, a.log)
	return process.RunTasks(ctx,
		process.Task{Name: "api server", Run: func(ctx context.Context) error {
			a.log.Info("api server listening", "addr", apiLn.Addr().String())
			return process.Serve(ctx, srv, apiLn, a.cfg.ShutdownTimeout)
		}},
		process.Task{Name: "admin server", Run: func(ctx context.Context) error {
			return admin.Serve(ctx, adminLn, admin.Handler(a.metrics, a.store.Ping, a.log), a.log)
		}},
		process.Task{Name: "idempotency sweep", Run: func(ctx context.Context) error {
			sweepIdempotencyKeys(ctx, a.store, a.cfg.IdempotencySweepInterval, a.log)
			return nil
		}},
	)
}

// Close releases what New opened, the last opened first.
func (a *App) Close() error { return a.closer.Close() }
