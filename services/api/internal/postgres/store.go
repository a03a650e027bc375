// Package postgres is the API's store: users, tokens, todos and idempotency keys in
// PostgreSQL or CockroachDB. Every write runs in one transaction together with its
// outbox rows (and its idempotency key, when the request has one), so a change is
// never acknowledged without its event and an event never describes a rolled-back
// change. Every read and write of a todo on a user's behalf is scoped by its owner.
//
// The API owns every table it writes, and this package holds all SQL on them: each
// table's statements sit in the file named for it (users.go, user_passwords.go,
// api_tokens.go, user_stats.go, todos.go, idempotency_keys.go, outbox.go), and the
// store's methods compose them. The write-side operator tools (packages verify,
// resync and restore) read and re-emit through the same statements (Source, Tx); they
// also read, never write, the publisher's tables (publishers.go).
//
// Every SQL text here is a constant; every value a client sent travels as a query
// parameter (TestSQLIsConstant checks it).
package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxtodo/outboxtodo/services/api/internal/idempotency"
	"github.com/outboxtodo/outboxtodo/services/api/internal/todos"
	"github.com/outboxtodo/outboxtodo/services/api/internal/users"
	"github.com/outboxtodo/outboxtodo/shared/event"
	sharedpg "github.com/outboxtodo/outboxtodo/shared/postgres"
)

// Store reads and writes the API's tables through a pool.
type Store struct {
	pool     *pgxpool.Pool
	notify   bool
	maxTodos int64
	now      func() time.Time
}

// Option tunes a Store.
type Option func(*Store)

// MaxTodosPerUser bounds the todos of one user (todos.DefaultMaxPerUser otherwise).
func MaxTodosPerUser(n int64) Option { return func(s *Store) { s.maxTodos = n } }

// New returns a store on pool. With notify, every writing transaction also queues the
// outbox notification that wakes an idle publisher at commit (PostgreSQL only: see
// outbox.NotifySupported and outbox.NotifySQL); without it the publisher finds the rows by
// polling.
func New(pool *pgxpool.Pool, notify bool, opts ...Option) *Store {
	s := &Store{pool: pool, notify: notify, maxTodos: todos.DefaultMaxPerUser, now: time.Now}
	for _, o := range opts {
		o(s)
	}
	return s
}

// change is the statements of one write, sent in one round trip inside its
// transaction: the row changes, their outbox rows, the publisher's wake-up and the
// idempotency record. run builds a new one for every attempt of a transaction.
type change struct {
	b      pgx.Batch
	notify bool
	pool   *pgxpool.Pool
	// committed finds out whether this change committed when its commit's answer was
	// lost (see run): it re-inserts a row the change inserted.
	committed func(ctx context.Context) (bool, error)
}

// resolveTimeout bounds finding out whether a commit whose answer was lost landed. It
// runs after the request's own deadline may be spent: the HTTP server's write timeout
// leaves five seconds past it to answer.
const resolveTimeout = 3 * time.Second

// run runs one write: fn queues its statements on c, a fresh change per attempt of the
// transaction, and sends them. When the commit's answer is lost (the connection broke
// or timed out at COMMIT), run finds out whether it committed (see resolve).
func (s *Store) run(ctx context.Context, fn func(tx pgx.Tx, c *change) error) error {
	var c *change
	err := sharedpg.WithTx(ctx, s.pool, func(tx pgx.Tx) error {
		c = &change{notify: s.notify, pool: s.pool}
		return fn(tx, c)
	})
	return s.resolve(ctx, c, err)
}

// runAtomic runs one write whose statements fn queues all at once, without reading
// anything first, as one implicit transaction in one round trip
// (sharedpg.WithBatch): the statements must refuse the write on the server (see
// countTodos and idempotency), never in a result callback. A lost answer is resolved
// as run resolves it.
func (s *Store) runAtomic(ctx context.Context, fn func(c *change) error) error {
	var c *change
	err := sharedpg.WithBatch(ctx, s.pool, func() (*pgx.Batch, error) {
		c = &change{notify: s.notify, pool: s.pool}
		if err := fn(c); err != nil {
			return nil, err
		}
		return &c.b, nil
	})
	return s.resolve(ctx, c, err)
}

// resolve returns err, the outcome of sending change c, unless it says the commit's
// answer was lost: then it finds out whether c committed, retrying the probe while the
// database is unreachable. It returns nil when it did, an error wrapping
// sharedpg.ErrNotCommitted when it did not, and an error wrapping
// sharedpg.ErrCommitUnknown only when it cannot tell within resolveTimeout. A refusal
// the server raised for an idempotency key is idempotency.ErrRace.
func (s *Store) resolve(ctx context.Context, c *change, err error) error {
	if sharedpg.IsUniqueViolation(err, idempotencyKeyConstraint) {
		return idempotency.ErrRace
	}
	if !errors.Is(err, sharedpg.ErrCommitUnknown) || c == nil || c.committed == nil {
		return err
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), resolveTimeout)
	defer cancel()
	for {
		committed, perr := c.committed(rctx)
		switch {
		case perr == nil && committed:
			return nil
		case perr == nil:
			return fmt.Errorf("%w: %v", sharedpg.ErrNotCommitted, err)
		case !sharedpg.IsUnavailable(perr) && !errors.Is(perr, context.DeadlineExceeded):
			return errors.Join(err, perr)
		}
		select {
		case <-rctx.Done():
			return errors.Join(err, perr)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// send runs the queued statements in tx, in order; the first failure ends it.
func (c *change) send(ctx context.Context, tx pgx.Tx, what string) error {
	if err := tx.SendBatch(ctx, &c.b).Close(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// Now returns the current time at the database's precision, for callers that build
// new aggregates.
func (s *Store) Now() time.Time {
	return s.now().UTC().Truncate(todos.Precision)
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	return s.pool.Ping(ctx)
}

// Tx is one transaction of the write-side operator tools (packages resync and
// restore): it reads aggregates' current state with their rows locked and re-emits
// events through the outbox, with the statements the API's own writes use. Store.InTx
// hands it out.
type Tx struct{ tx pgx.Tx }

// InTx runs fn in one transaction, committed when fn returns nil and rolled back
// otherwise (sharedpg.WithTx: fn may run again when the server asks for a retry).
func (s *Store) InTx(ctx context.Context, fn func(*Tx) error) error {
	return sharedpg.WithTx(ctx, s.pool, func(tx pgx.Tx) error { return fn(&Tx{tx: tx}) })
}

// Source is the whole source of truth as one snapshot: every user, every todo, and
// every row of user_stats, deleted users' last snapshots included.
type Source struct {
	Users []users.User
	Todos []todos.Todo
	Stats map[uuid.UUID]event.Stats
}

// Source reads every user, todo and user_stats row in one read-only REPEATABLE READ
// transaction, so that the tables agree with each other. It holds them all in memory.
func (s *Store) Source(ctx context.Context) (Source, error) {
	var src Source
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return src, fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }() // read-only: nothing to keep
	rows, err := tx.Query(ctx, allUsersSQL)
	if src.Users, err = collect(rows, err, scanUser); err != nil {
		return src, fmt.Errorf("read users: %w", err)
	}
	rows, err = tx.Query(ctx, allTodosSQL)
	if src.Todos, err = collect(rows, err, scanTodo); err != nil {
		return src, fmt.Errorf("read todos: %w", err)
	}
	if src.Stats, err = allStats(ctx, tx); err != nil {
		return src, err
	}
	return src, nil
}

// IDs lists the id of every aggregate of aggType (event.AggregateUser or
// event.AggregateTodo), whoever owns it.
func (s *Store) IDs(ctx context.Context, aggType string) ([]uuid.UUID, error) {
	var (
		rows pgx.Rows
		err  error
	)
	if aggType == event.AggregateUser {
		rows, err = s.pool.Query(ctx, userIDsSQL)
	} else {
		rows, err = s.pool.Query(ctx, todoIDsSQL)
	}
	ids, err := collect(rows, err, func(r scanner) (uuid.UUID, error) {
		var id uuid.UUID
		return id, r.Scan(&id)
	})
	if err != nil {
		return nil, fmt.Errorf("list %s ids: %w", aggType, err)
	}
	return ids, nil
}

type scanner interface{ Scan(dest ...any) error }

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// collect reads every row a query returns with scan; err is the query's.
func collect[T any](rows pgx.Rows, err error, scan func(scanner) (T, error)) ([]T, error) {
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (T, error) { return scan(r) })
}
