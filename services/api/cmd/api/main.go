// Command api serves the public REST API on API_ADDR and the admin endpoints (probes,
// metrics, pprof) on ADMIN_ADDR. See internal/config for every setting.
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

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

func main() {
	process.Main("api", func(ctx context.Context, log *slog.Logger) error { return run(ctx, log, nil) })
}

// run serves until ctx ends, configured from environ (the process environment when
// nil).
func run(ctx context.Context, log *slog.Logger, environ map[string]string) (err error) {
	cfg, err := config.FromMap(environ)
	if err != nil {
		return err
	}
	log.Info("starting", "config", cfg)
	tracing, err := telemetry.FromEnv(ctx, "api", log)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		err = errors.Join(err, tracing.Shutdown(sctx))
	}()
	cursorKey := []byte(cfg.CursorSecret)
	if len(cursorKey) == 0 {
		cursorKey = make([]byte, 32)
		_, _ = rand.Read(cursorKey) // crypto/rand.Read never fails; it crashes the program instead
		log.Warn("CURSOR_SECRET is not set: pagination cursors are keyed by a random key of this process " +
			"and fail with invalid-cursor after a restart or on another replica; set the same CURSOR_SECRET on every replica")
	}

	pool, err := sharedpg.Connect(ctx, cfg.DatabaseURL, sharedpg.PoolConfig{
		MaxConns:         cfg.DBMaxConns,
		AppName:          "api",
		StatementTimeout: cfg.RequestTimeout,
	})
	if err != nil {
		return err
	}
	defer pool.Close()
	notify, err := outboxNotify(ctx, cfg.OutboxNotify, pool)
	if err != nil {
		return err
	}
	log.Info("outbox notifications", "enabled", notify, "setting", cfg.OutboxNotify)
	store := postgres.New(pool, notify, postgres.MaxTodosPerUser(cfg.MaxTodosPerUser))

	// /health/sync is public: its outbox statistics run on a small pool of their own,
	// so that its callers can never take connections from the writes.
	syncPool, err := sharedpg.Connect(ctx, cfg.DatabaseURL, sharedpg.PoolConfig{
		MaxConns:         syncPoolConns,
		AppName:          "api-sync",
		StatementTimeout: syncTimeout,
	})
	if err != nil {
		return err
	}
	defer syncPool.Close()
	rs, err := openReadSide(cfg, syncPool, log)
	if err != nil {
		return err
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := rs.Close(closeCtx); err != nil {
			log.Warn("close read side", "error", err)
		}
	}()

	reg := admin.NewRegistry()
	reg.MustRegister(sharedpg.PoolCollector(pool, "api"), sharedpg.PoolCollector(syncPool, "api-sync"))
	handler, err := httpapi.New(httpapi.Options{
		Store:               store,
		ReadModel:           rs.readModel,
		LeaderboardCacheTTL: cfg.LeaderboardCacheTTL,
		SyncReport:          rs.reporter.Report,
		SyncReportTTL:       syncReportTTL,
		TokenTTL:            cfg.TokenTTL,
		AuthCacheTTL:        cfg.AuthCacheTTL,
		AuthCacheSize:       cfg.AuthCacheSize,
		Checks:              append([]httpapi.Check{{Name: "postgres", Timeout: 2 * time.Second, Fn: store.Ping}}, rs.checks...),
		Log:                 log,
		Metrics:             reg,
		RequestTimeout:      cfg.RequestTimeout,
		MaxBodyBytes:        cfg.MaxBodyBytes,
		CORSAllowedOrigins:  cfg.CORSAllowedOrigins,
		CursorKey:           cursorKey,
		RateLimitPerIP:      httpapi.RateLimit{PerSecond: cfg.RateLimitPerIP, Burst: cfg.RateLimitPerIPBurst},
		RateLimitPerToken:   httpapi.RateLimit{PerSecond: cfg.RateLimitPerToken, Burst: cfg.RateLimitPerTokenBurst},
		RateLimitKeys:       cfg.RateLimitKeys,
		TrustedProxies:      cfg.TrustedProxyPrefixes,
		TracerProvider:      tracing.Provider,
		PasswordHash: password.Params{
			Memory: cfg.PasswordHashMemory, Time: cfg.PasswordHashTime, Threads: cfg.PasswordHashThreads,
		},
		PasswordHashConcurrency: cfg.PasswordHashConcurrency,
		SignInPerEmail:          cfg.SignInPerEmail,
		SignInPerAddress:        cfg.SignInPerAddress,
		SignInWindow:            cfg.SignInWindow,
		ReadYourWritesWait:      cfg.ReadYourWritesWait,
		PublicURL:               cfg.PublicURL,
	})
	if err != nil {
		return err
	}

	apiLn, err := net.Listen("tcp", cfg.APIAddr)
	if err != nil {
		return fmt.Errorf("listen on API_ADDR: %w", err)
	}
	adminLn, err := net.Listen("tcp", cfg.AdminAddr)
	if err != nil {
		_ = apiLn.Close()
		return fmt.Errorf("listen on ADMIN_ADDR: %w", err)
	}
	srv := httpapi.NewServer(handler, httpapi.ServerLimits{
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.RequestTimeout,
		// The handler answers within RequestTimeout; the margin lets it write the answer.
		WriteTimeout:   cfg.RequestTimeout + 5*time.Second,
		IdleTimeout:    cfg.IdleTimeout,
		MaxHeaderBytes: cfg.MaxHeaderBytes,
	}, log)

	// The first of these to fail stops the others; all stop when ctx ends.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	tasks := []func(context.Context) error{
		func(ctx context.Context) error {
			log.Info("api server listening", "addr", apiLn.Addr().String())
			return process.Serve(ctx, srv, apiLn, cfg.ShutdownTimeout)
		},
		func(ctx context.Context) error {
			return admin.Serve(ctx, adminLn, admin.Handler(reg, store.Ping, log), log)
		},
		func(ctx context.Context) error {
			sweepIdempotencyKeys(ctx, store, cfg.IdempotencySweepInterval, log)
			return nil
		},
	}
	errs := make([]error, len(tasks))
	var wg sync.WaitGroup
	for i, task := range tasks {
		wg.Go(func() {
			errs[i] = task(ctx)
			cancel()
		})
	}
	wg.Wait()
	return errors.Join(errs...)
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

// sweepBatch bounds one delete of expired idempotency keys, so that each statement
// stays short however many keys expired at once.
const sweepBatch = 1000

// sweepIdempotencyKeys deletes expired idempotency keys every interval until ctx ends.
// Failures are logged and retried at the next tick: expired keys are already ignored by
// lookups, so a late sweep costs only disk.
func sweepIdempotencyKeys(ctx context.Context, store *postgres.Store, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var total int64
		for ctx.Err() == nil {
			callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
			n, err := store.DeleteExpiredIdempotencyKeys(callCtx, sweepBatch)
			cancel()
			if err != nil {
				log.Warn("sweep idempotency keys", "error", err)
				break
			}
			total += n
			if n < sweepBatch {
				break
			}
		}
		if total > 0 {
			log.Info("swept expired idempotency keys", "deleted", total)
		}
	}
}
