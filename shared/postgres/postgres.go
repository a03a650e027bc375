// Package postgres holds the database plumbing every service shares: the pool, the
// query interface that both a pool and a transaction satisfy, and the one transaction
// helper. The SQL behind it must run on PostgreSQL and on CockroachDB.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxtodo/outboxtodo/shared/redact"
)

// DBTX runs queries on a pool or inside a transaction.
type DBTX interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
	CopyFrom(ctx context.Context, tableName pgx.Identifier, columnNames []string, rowSrc pgx.CopyFromSource) (int64, error)
}

// Beginner starts transactions; *pgxpool.Pool is one.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// PoolConfig tunes Connect.
type PoolConfig struct {
	MaxConns       int32         // 0 keeps pgx's default (max(4, GOMAXPROCS))
	ConnectTimeout time.Duration // per connection attempt; 0 means 5s
	// StatementTimeout bounds every statement on the server; 0 leaves the server's.
	StatementTimeout time.Duration
	AppName          string
	// NoJIT turns PostgreSQL's JIT compilation off for the pool's sessions. Its trigger
	// is the plan's estimated cost, which for a query evaluating a subplan per row scales
	// with the table, while a LIMIT stops the real work early: the publisher's claim paid
	// 10-35 ms of compilation for 2 ms of execution. CockroachDB has no JIT; the setting
	// is skipped where the server does not know it.
	NoJIT bool
}

// Connect opens a pool and checks that the server answers.
func Connect(ctx context.Context, databaseURL string, pc PoolConfig) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("parse database url %s: %w", Redact(databaseURL), err)
	}
	if pc.MaxConns > 0 {
		cfg.MaxConns = pc.MaxConns
	}
	cfg.ConnConfig.ConnectTimeout = pc.ConnectTimeout
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	if pc.AppName != "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = pc.AppName
	}
	if pc.StatementTimeout > 0 {
		cfg.ConnConfig.RuntimeParams["statement_timeout"] = fmt.Sprint(pc.StatementTimeout.Milliseconds())
	}
	if pc.NoJIT {
		cfg.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
			if _, err := conn.Exec(ctx, "SET jit = off"); err != nil && SQLState(err) != "42704" { // undefined_object: no such setting
				return fmt.Errorf("turn JIT off: %w", err)
			}
			return nil
		}
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open pool: %w", err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, cfg.ConnConfig.ConnectTimeout)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("ping %s: %w", Redact(databaseURL), err)
	}
	return pool, nil
}

// maxTxAttempts bounds the retries of a transaction that failed with a serialization
// failure: CockroachDB runs every transaction SERIALIZABLE and asks clients to retry.
const maxTxAttempts = 5

// WithTx runs fn in a transaction and commits it. It rolls back when fn fails (with a
// context that is not cancelled, so a cancelled request still releases its locks) and
// returns the commit error wrapped. A serialization failure (SQLSTATE 40001) or a
// deadlock (40P01) reruns fn in a new transaction, up to five attempts in all, so fn
// must not have effects outside the transaction.
func WithTx(ctx context.Context, db Beginner, fn func(tx pgx.Tx) error) error {
	return retried(ctx, func() error { return runTx(ctx, db, fn) })
}

// retried runs attempt until it succeeds, fails with an error that is not a
// serialization failure or a deadlock, or has run maxTxAttempts times.
func retried(ctx context.Context, attempt func() error) error {
	var err error
	for n := 1; n <= maxTxAttempts; n++ {
		err = attempt()
		if err == nil || !retryable(err) || ctx.Err() != nil {
			return err
		}
		// A short, growing pause spreads out the transactions that collided.
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(n*n) * time.Millisecond):
		}
	}
	return err
}

func runTx(ctx context.Context, db Beginner, fn func(tx pgx.Tx) error) (err error) {
	tx, err := db.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if err == nil {
			return
		}
		rbCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if rbErr := tx.Rollback(rbCtx); rbErr != nil && !errors.Is(rbErr, pgx.ErrTxClosed) {
			err = errors.Join(err, fmt.Errorf("rollback: %w", rbErr))
		}
	}()
	if err = fn(tx); err != nil {
		return err
	}
	if err = tx.Commit(ctx); err != nil {
		if SQLState(err) == "" && !errors.Is(err, pgx.ErrTxCommitRollback) {
			// No answer from the server: the COMMIT may or may not have landed.
			return fmt.Errorf("commit: %w: %w", ErrCommitUnknown, err)
		}
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// WithBatch runs the statements of the batch build returns as one transaction in one
// round trip: sent as one pipeline ending in a single Sync and without BEGIN, they run
// as one implicit transaction, which the server commits at the Sync when every
// statement succeeded and rolls back when one failed (PostgreSQL; CockroachDB since
// v22.1). A write held open over three round trips (BEGIN, the statements, COMMIT)
// holds its connection while the client waits for a core between them; on 2 loaded
// cores that wait, not the server, set the pace of the API's pool (BENCHMARKS.md).
//
// The price: the transaction has committed before the client reads a result, so only
// a statement that fails on the server can refuse the write, never the batch's result
// callbacks. A serialization failure or a deadlock runs build and the batch again, as
// WithTx does. An error without a SQLSTATE after the batch was sent wraps
// ErrCommitUnknown: the Sync may have landed.
func WithBatch(ctx context.Context, pool *pgxpool.Pool, build func() (*pgx.Batch, error)) error {
	return retried(ctx, func() error { return sendBatch(ctx, pool, build) })
}

func sendBatch(ctx context.Context, pool *pgxpool.Pool, build func() (*pgx.Batch, error)) error {
	b, err := build()
	if err != nil {
		return err
	}
	// Acquired apart from the send, so that a database that cannot be reached is a
	// known failure, not an unknown outcome.
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire a connection: %w", err)
	}
	defer conn.Release()
	err = conn.SendBatch(ctx, b).Close()
	if err != nil && SQLState(err) == "" && !pgconn.SafeToRetry(err) {
		return fmt.Errorf("batch: %w: %w", ErrCommitUnknown, err)
	}
	return err
}

// ErrCommitUnknown marks a transaction whose COMMIT got no answer from the server (the
// connection broke or timed out around it): it may have committed or not. Callers must
// not report it as a failure; they can find out with ProbeInsert.
var ErrCommitUnknown = errors.New("commit outcome unknown")

// ErrNotCommitted marks a transaction whose commit answer was lost and that a probe
// then found not committed: nothing was written, and the database was failing.
var ErrNotCommitted = errors.New("transaction did not commit (its connection broke)")

// ProbeInsert tells whether a transaction whose commit answer was lost committed, by
// inserting a row it inserted (insertSQL must be that INSERT with ON CONFLICT on the
// row's key DO NOTHING) in a transaction of its own that is always rolled back. A
// conflict means the row is committed. An insert means it is not and never will be:
// while the lost transaction is still in progress it holds the key, and the probe's
// insert waits for its end. A unique violation of another constraint means another
// transaction owns that slot, so the lost one did not commit either. Give ctx a
// deadline: a server that never learns its client is gone holds the key until then.
func ProbeInsert(ctx context.Context, db Beginner, insertSQL string, args ...any) (committed bool, err error) {
	tx, err := db.Begin(ctx)
	if err != nil {
		return false, fmt.Errorf("probe: begin: %w", err)
	}
	defer func() {
		rbCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = tx.Rollback(rbCtx) // always: the probe must leave nothing behind
	}()
	tag, err := tx.Exec(ctx, insertSQL, args...)
	switch {
	case IsUniqueViolation(err, ""):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("probe: %w", err)
	}
	return tag.RowsAffected() == 0, nil
}

// IsUnavailable reports whether err means the database could not be reached or
// stopped serving (connection refused or lost, server shutting down or starting, too
// many connections), as opposed to an answer about the request itself: the request may
// be retried later.
func IsUnavailable(err error) bool {
	var (
		connectErr *pgconn.ConnectError
		netErr     net.Error
	)
	switch {
	case err == nil, errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		// A deadline is the request's own (context.DeadlineExceeded is a net.Error).
		return false
	case errors.As(err, &connectErr), errors.As(err, &netErr), pgconn.SafeToRetry(err), errors.Is(err, ErrNotCommitted),
		errors.Is(err, pgconn.ErrConnClosed), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return true
	}
	code := SQLState(err)
	return strings.HasPrefix(code, "08") || // connection exception
		code == "57P01" || code == "57P02" || code == "57P03" || // admin or crash shutdown, cannot connect now
		code == "53300" // too many connections
}

func retryable(err error) bool {
	code := SQLState(err)
	return code == "40001" || code == "40P01"
}

// SQLState returns the SQLSTATE code of a server error wrapped in err, or "".
func SQLState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// IsUniqueViolation reports whether err is a unique violation (23505), optionally of
// the named constraint.
func IsUniqueViolation(err error, constraint string) bool { return violates(err, "23505", constraint) }

// IsCheckViolation reports whether err is a check constraint violation (23514),
// optionally of the named constraint.
func IsCheckViolation(err error, constraint string) bool { return violates(err, "23514", constraint) }

func violates(err error, code, constraint string) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != code {
		return false
	}
	return constraint == "" || pgErr.ConstraintName == constraint
}

// Redact hides the password in a database URL for logs and errors.
func Redact(databaseURL string) string { return redact.URL(databaseURL) }
