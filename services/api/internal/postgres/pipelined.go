package postgres

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// pipelined begins transactions whose BEGIN travels with their first statements
// (pgx's Batch.BeginTx): one round trip less per write. Under load the server
// otherwise holds each write's transaction open ("idle in transaction") while the
// API's answer to BEGIN waits for a core; the profile of issue 13 item 4 found a
// quarter to a third of the busy backend samples there. It is a sharedpg.Beginner for
// sharedpg.WithTx.
type pipelined struct{ pool *pgxpool.Pool }

// Begin acquires a connection; the transaction begins with the first SendBatch or
// QueryRow, in the same round trip, or before any other statement.
func (p pipelined) Begin(ctx context.Context) (pgx.Tx, error) {
	c, err := p.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	return &pipelinedTx{c: c}, nil
}

// pipelinedTx is pgx's transaction once it has begun. Commit and Rollback are pgx's,
// then give the connection back to the pool (which destroys one left inside a
// transaction); a transaction that never began has nothing to commit or roll back.
type pipelinedTx struct {
	c      *pgxpool.Conn
	tx     pgx.Tx // nil until begun
	closed bool
}

var errNested = errors.New("nested transactions are not supported here")

// SendBatch sends b, with the transaction's BEGIN ahead of it when it has not begun.
func (t *pipelinedTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	switch {
	case t.closed:
		return pgx.FailedBatchResults(b, pgx.ErrTxClosed)
	case t.tx != nil:
		return t.tx.SendBatch(ctx, b)
	}
	nb := &pgx.Batch{}
	nb.BeginTx(pgx.TxOptions{})
	nb.QueuedQueries = append(nb.QueuedQueries, b.QueuedQueries...)
	br := t.c.SendBatch(ctx, nb)
	t.tx = br.Tx()
	return &afterBegin{BatchResults: br}
}

// QueryRow runs sql, with the transaction's BEGIN ahead of it when it has not begun.
func (t *pipelinedTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	switch {
	case t.closed:
		return errRow{pgx.ErrTxClosed}
	case t.tx != nil:
		return t.tx.QueryRow(ctx, sql, args...)
	}
	b := &pgx.Batch{}
	b.Queue(sql, args...)
	br := t.SendBatch(ctx, b)
	return batchRow{row: br.QueryRow(), br: br}
}

// begin begins the transaction on its own, for the statements that cannot share the
// BEGIN's round trip.
func (t *pipelinedTx) begin(ctx context.Context) (pgx.Tx, error) {
	switch {
	case t.closed:
		return nil, pgx.ErrTxClosed
	case t.tx == nil:
		tx, err := t.c.Begin(ctx)
		if err != nil {
			return nil, err
		}
		t.tx = tx
	}
	return t.tx, nil
}

func (t *pipelinedTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	tx, err := t.begin(ctx)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	return tx.Exec(ctx, sql, args...)
}

func (t *pipelinedTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	tx, err := t.begin(ctx)
	if err != nil {
		return nil, err
	}
	return tx.Query(ctx, sql, args...)
}

func (t *pipelinedTx) CopyFrom(ctx context.Context, table pgx.Identifier, cols []string, src pgx.CopyFromSource) (int64, error) {
	tx, err := t.begin(ctx)
	if err != nil {
		return 0, err
	}
	return tx.CopyFrom(ctx, table, cols, src)
}

func (t *pipelinedTx) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	if t.closed {
		return nil, pgx.ErrTxClosed
	}
	return t.c.Conn().Prepare(ctx, name, sql)
}

// LargeObjects is not supported: the store does not use them, and they need a begun
// transaction, which this method has no context to begin.
func (t *pipelinedTx) LargeObjects() pgx.LargeObjects { return pgx.LargeObjects{} }

func (t *pipelinedTx) Begin(context.Context) (pgx.Tx, error) { return nil, errNested }

func (t *pipelinedTx) Conn() *pgx.Conn { return t.c.Conn() }

func (t *pipelinedTx) Commit(ctx context.Context) error {
	return t.end(func(tx pgx.Tx) error { return tx.Commit(ctx) })
}

func (t *pipelinedTx) Rollback(ctx context.Context) error {
	return t.end(func(tx pgx.Tx) error { return tx.Rollback(ctx) })
}

// end runs Commit or Rollback once and gives the connection back.
func (t *pipelinedTx) end(fn func(pgx.Tx) error) error {
	if t.closed {
		return pgx.ErrTxClosed
	}
	t.closed = true
	defer t.c.Release()
	if t.tx == nil {
		return nil
	}
	return fn(t.tx)
}

// afterBegin hides the BEGIN at the head of a batch from the batch's reader.
type afterBegin struct {
	pgx.BatchResults
	read bool
}

func (a *afterBegin) skip() error {
	if a.read {
		return nil
	}
	a.read = true
	_, err := a.BatchResults.Exec()
	return err
}

func (a *afterBegin) Exec() (pgconn.CommandTag, error) {
	if err := a.skip(); err != nil {
		return pgconn.CommandTag{}, err
	}
	return a.BatchResults.Exec()
}

func (a *afterBegin) Query() (pgx.Rows, error) {
	if err := a.skip(); err != nil {
		return nil, err
	}
	return a.BatchResults.Query()
}

func (a *afterBegin) QueryRow() pgx.Row {
	if err := a.skip(); err != nil {
		return errRow{err}
	}
	return a.BatchResults.QueryRow()
}

// batchRow is the row of a one-query batch; scanning it closes the batch.
type batchRow struct {
	row pgx.Row
	br  pgx.BatchResults
}

func (r batchRow) Scan(dest ...any) error {
	err := r.row.Scan(dest...)
	if cerr := r.br.Close(); err == nil {
		err = cerr
	}
	return err
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }
