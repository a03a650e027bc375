// Package wake tells the relay when new outbox rows have committed, through PostgreSQL
// LISTEN on a dedicated connection. A write notifies only when its notification
// statement, the last of the statements it sends in one round trip, finds a publisher
// replica marked idle and listening (outboxdb.MarkListening): Flag keeps this replica's
// mark, set when a drain finds nothing and cleared once the relay keeps finding work,
// so that under load no commit pays for a notification. CockroachDB has no LISTEN, so
// Probe checks at start instead of assuming, and the relay falls back to polling; it
// polls in listen mode too, at its idle interval, as a safety net for notifications
// lost while the listener reconnects or sent to no one.
package wake

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxtodo/outboxtodo/services/publisher/internal/outboxdb"
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
	if err := outboxdb.Listen(ctx, conn); err != nil {
		if postgres.SQLState(err) != "" {
			return false, nil
		}
		return false, fmt.Errorf("probe: %w", err)
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
	err = outboxdb.Listen(cctx, conn)
	cancel()
	if err != nil {
		return err
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

// busyDrains is how many drains in a row must find rows before Flag unmarks its replica.
// One is not enough: at low load a notification wakes the relay, which finds the one
// new row, and unmarking would only cost two writes per event.
const busyDrains = 2

// flagTimeout bounds each write of the mark.
const flagTimeout = 5 * time.Second

// Flag keeps this replica's mark in outbox_listeners in step with the relay: marked
// unless its drains keep finding rows, so that writes wake it when it would otherwise
// sleep, and skip pg_notify while it polls at its shortest interval anyway. Only the relay's goroutine calls
// Drained; Clear runs after it has stopped.
type Flag struct {
	pool    *pgxpool.Pool
	replica string
	ttl     time.Duration
	holding func() bool
	log     *slog.Logger

	marked    bool
	refreshed time.Time // when the mark was last written, on the local monotonic clock
	busy      int       // drains in a row that found rows
}

// NewFlag returns the flag of replica. Its mark lasts ttl on the database clock and is
// refreshed after ttl/2 by the next idle drain: ttl must exceed twice the relay's
// longest idle poll interval. holding reports whether the replica holds partitions: one
// that holds none (a standby beyond the partition count, or one starting) would be
// woken for nothing, so it is never marked.
func NewFlag(pool *pgxpool.Pool, replica string, ttl time.Duration, holding func() bool, log *slog.Logger) *Flag {
	return &Flag{pool: pool, replica: replica, ttl: ttl, holding: holding, log: log}
}

// Drained takes the number of rows one drain claimed. The replica is marked unless it
// is busy (busyDrains drains in a row found rows) or holds no partitions. Drained
// returns true when the relay must drain again before it sleeps: the mark has just been
// set, and a write whose notification statement ran before the mark committed sent no
// notification. A failed write of the mark is logged and costs only latency (the relay
// still polls).
func (f *Flag) Drained(ctx context.Context, claimed int) (again bool) {
	if claimed > 0 {
		f.busy++
	} else {
		f.busy = 0
	}
	switch {
	case f.busy >= busyDrains || !f.holding():
		if f.marked {
			f.write(ctx, false)
		}
	case !f.marked:
		return f.write(ctx, true)
	case time.Since(f.refreshed) >= f.ttl/2:
		f.write(ctx, true)
	}
	return false
}

// Clear removes the mark, so that writes stop notifying a replica that is going away.
func (f *Flag) Clear(ctx context.Context) {
	f.write(ctx, false)
}

// write sets or removes the mark and reports whether it succeeded.
func (f *Flag) write(ctx context.Context, mark bool) bool {
	wctx, cancel := context.WithTimeout(ctx, flagTimeout)
	defer cancel()
	var err error
	if mark {
		err = outboxdb.MarkListening(wctx, f.pool, f.replica, f.ttl)
	} else {
		err = outboxdb.UnmarkListening(wctx, f.pool, f.replica)
	}
	if err != nil {
		if ctx.Err() == nil {
			f.log.Warn("could not update the idle-listener mark; polling covers it", "mark", mark, "error", err)
		}
		return false
	}
	f.marked = mark
	if mark {
		f.refreshed = time.Now()
	}
	return true
}
