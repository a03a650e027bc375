// Package wake tells the relay when new outbox rows have committed, through PostgreSQL
// LISTEN on a dedicated connection (the API calls shared/outbox.Notify in its writing
// transaction). CockroachDB has no LISTEN, so Probe checks at start instead of assuming,
// and the relay falls back to polling; it polls in listen mode too, at its idle
// interval, as a safety net for notifications lost while the listener reconnects.
package wake

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboxtodo/outboxtodo/shared/outbox"
	"github.com/outboxtodo/outboxtodo/shared/postgres"
)

const connectTimeout = 5 * time.Second

// Probe reports whether the database at databaseURL accepts LISTEN. A server that
// rejects it (CockroachDB) is a plain false; a failure to connect is an error.
func Probe(ctx context.Context, databaseURL string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*connectTimeout)
	defer cancel()
	conn, err := connect(ctx, databaseURL)
	if err != nil {
		return false, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+outbox.Channel); err != nil {
		if postgres.SQLState(err) != "" {
			return false, nil
		}
		return false, fmt.Errorf("probe LISTEN: %w", err)
	}
	return true, nil
}

// Listener turns notifications on outbox.Channel into wake-ups on C.
type Listener struct {
	databaseURL string
	log         *slog.Logger
	c           chan struct{}
}

// NewListener returns a listener; call Run to start it.
func NewListener(databaseURL string, log *slog.Logger) *Listener {
	return &Listener{databaseURL: databaseURL, log: log, c: make(chan struct{}, 1)}
}

// C receives a value after one or more notifications (a burst folds into one wake-up),
// and after every reconnection, since notifications sent meanwhile are lost.
func (l *Listener) C() <-chan struct{} { return l.c }

// Run listens until ctx is cancelled, reconnecting with capped exponential backoff when
// the connection fails. It returns nil on cancellation.
func (l *Listener) Run(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for {
		err := l.listen(ctx)
		if ctx.Err() != nil {
			return nil
		}
		l.log.Warn("notification listener lost its connection; polling covers the gap", "error", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

func (l *Listener) listen(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 2*connectTimeout)
	conn, err := connect(cctx, l.databaseURL)
	if err != nil {
		cancel()
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(cctx, "LISTEN "+outbox.Channel)
	cancel()
	if err != nil {
		return fmt.Errorf("LISTEN %s: %w", outbox.Channel, err)
	}
	l.signal() // rows may have committed while we were not listening
	for {
		// Blocks until a notification arrives, the connection fails or ctx ends. A
		// half-open connection is found by TCP keepalive (pgx's dialer sets it); until
		// then the relay's idle poll keeps the publisher going.
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return fmt.Errorf("wait for notification: %w", err)
		}
		l.signal()
	}
}

func (l *Listener) signal() {
	select {
	case l.c <- struct{}{}:
	default:
	}
}

func connect(ctx context.Context, databaseURL string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("parse database url %s: %w", postgres.Redact(databaseURL), err)
	}
	cfg.ConnectTimeout = connectTimeout
	cfg.RuntimeParams["application_name"] = "publisher-listener"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", postgres.Redact(databaseURL), err)
	}
	return conn, nil
}
