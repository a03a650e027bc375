// Package postgres is the API's store: users, tokens, todos and idempotency keys in
// PostgreSQL or CockroachDB. Every write runs in one transaction together with its
// outbox rows (and its idempotency key, when the request has one), so a change is
// never acknowledged without its event and an event never describes a rolled-back
// change. Every read and write of a todo is scoped by its owner.
//
// Every SQL text here is a constant; every value a client sent travels as a query
// parameter (TestSQLIsConstant checks it).
package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxtodo/outboxtodo/services/api/internal/idempotency"
	"github.com/outboxtodo/outboxtodo/services/api/internal/todos"
	"github.com/outboxtodo/outboxtodo/services/api/internal/tokens"
	"github.com/outboxtodo/outboxtodo/services/api/internal/users"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/outbox"
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
// outbox.NotifySupported and outbox.Notify); without it the publisher finds the rows by
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

// events queues the outbox rows of the change and, when enabled, the notification
// that wakes the publisher at commit. The first event's row identifies the change.
func (c *change) events(events ...event.Envelope) error {
	if err := outbox.QueueInsert(&c.b, events...); err != nil {
		return err
	}
	if c.notify {
		outbox.QueueNotify(&c.b)
	}
	if len(events) > 0 && c.committed == nil {
		first, pool := events[0], c.pool
		c.committed = func(ctx context.Context) (bool, error) { return outbox.Committed(ctx, pool, first) }
	}
	return nil
}

// countTodos queues the change of the owner's todo counts, and of their version, that
// a todo write makes: the outbox rows queued after it carry the new counts (see
// outbox.Insert). The row lock it takes serializes one user's todo writes. A creation
// (limit > 0) is refused by the server, on the constraint todo_cap_reached, when the
// owner would hold more than limit: the update then changes no row, and the statement
// inserts a row write_refusals never accepts (migration 00010), so that the refusal
// rolls back a transaction that commits without a word from the API (runAtomic). The
// main query reads the insert's output, so that no server may skip it as unused.
// *version receives the stats version the change leaves, the read-your-writes position
// of the write (see package consistency): the update's RETURNING, or a read of the
// row when the counts are unchanged, in the same round trip either way.
func (c *change) countTodos(owner uuid.UUID, open, completed, limit int64, version *int64) {
	scan := func(row pgx.Row) error {
		if err := row.Scan(version); err != nil {
			return fmt.Errorf("read stats version of user %s: %w", owner, err)
		}
		return nil
	}
	switch {
	case open == 0 && completed == 0:
		// The counts are unchanged: the events carry them as they are.
		c.b.Queue(`SELECT version FROM user_stats WHERE user_id = $1`, owner).QueryRow(scan)
	case limit > 0:
		c.b.Queue(`
WITH counted AS (
    UPDATE user_stats SET open = open + $2, completed = completed + $3, version = version + 1
    WHERE user_id = $1 AND open + completed + $2 + $3 <= $4
    RETURNING version),
refused AS (
    INSERT INTO write_refusals (reason)
    SELECT 'todo cap reached' WHERE NOT EXISTS (SELECT 1 FROM counted)
    RETURNING reason)
SELECT version FROM counted WHERE NOT EXISTS (SELECT 1 FROM refused)`, owner, open, completed, limit).QueryRow(scan)
	default:
		c.b.Queue(`
UPDATE user_stats SET open = open + $2, completed = completed + $3, version = version + 1
WHERE user_id = $1
RETURNING version`, owner, open, completed).QueryRow(func(row pgx.Row) error {
			if err := row.Scan(version); errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("no stats row for user %s", owner)
			} else if err != nil {
				return fmt.Errorf("count todos of user %s: %w", owner, err)
			}
			return nil
		})
	}
}

// delta is how a todo's state counts in its owner's stats: (open, completed).
func delta(t *todos.Todo) (open, completed int64) {
	switch {
	case t == nil:
		return 0, 0
	case t.Completed:
		return 0, 1
	}
	return 1, 0
}

const insertTokenSQL = `INSERT INTO api_tokens (token_hash, id, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)`

// token queues the insert of a token; it identifies a change that has no event.
func (c *change) token(t tokens.Token) {
	args := []any{t.Hash, t.ID, t.UserID, t.CreatedAt, t.ExpiresAt}
	c.b.Queue(insertTokenSQL, args...)
	if c.committed == nil {
		pool := c.pool
		c.committed = func(ctx context.Context) (bool, error) {
			return sharedpg.ProbeInsert(ctx, pool, insertTokenSQL+` ON CONFLICT (token_hash) DO NOTHING`, args...)
		}
	}
}

// tokenGone identifies a change that deletes the token id: a revocation is done when
// the token is gone, whichever transaction deleted it.
func (c *change) tokenGone(id uuid.UUID) {
	pool := c.pool
	c.committed = func(ctx context.Context) (bool, error) {
		var exists bool
		if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM api_tokens WHERE id = $1)`, id).Scan(&exists); err != nil {
			return false, fmt.Errorf("probe: %w", err)
		}
		return !exists, nil
	}
}

// idempotencyKeyConstraint is the key of idempotency_keys: a write that stores a key
// a concurrent request stored first fails on it (see idempotency).
const idempotencyKeyConstraint = "idempotency_keys_pkey"

// idempotency queues rec (if any). An expired row with the same key is deleted first;
// a live one means a concurrent request won: the insert fails on the key, on the
// server, which resolve reports as idempotency.ErrRace. Under READ COMMITTED the
// insert waits for that request's transaction, then fails if it committed.
func (c *change) idempotency(rec *idempotency.Record, now time.Time) error {
	if rec == nil {
		return nil
	}
	headers, err := json.Marshal(rec.Response.Headers)
	if err != nil {
		return fmt.Errorf("encode headers: %w", err)
	}
	c.b.Queue(`DELETE FROM idempotency_keys WHERE scope = $1 AND idem_key = $2 AND created_at <= $3`,
		rec.Scope, rec.Key, now.Add(-idempotency.TTL))
	c.b.Queue(`
INSERT INTO idempotency_keys (scope, idem_key, request_hash, status_code, response_headers, response_body, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		rec.Scope, rec.Key, rec.Fingerprint, rec.Response.Status, headers, rec.Response.Body, now)
	return nil
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

const userColumns = `id, email, display_name, version, created_at, updated_at`

func scanUser(row pgx.Row) (users.User, error) {
	var u users.User
	err := row.Scan(&u.ID, &u.Email, &u.DisplayName, &u.Version, &u.CreatedAt, &u.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return u, users.ErrNotFound
	}
	if err != nil {
		return u, fmt.Errorf("read user: %w", err)
	}
	u.CreatedAt, u.UpdatedAt = u.CreatedAt.UTC(), u.UpdatedAt.UTC()
	return u, nil
}

// CreateUser stores a new user, its password hash (none when empty), its first token,
// its user.created event (with trace) and idem, the idempotency record of the request,
// when it has one. It fails with users.ErrEmailTaken when the email is registered
// already and with idempotency.ErrRace when a concurrent request stored the same key
// first.
func (s *Store) CreateUser(ctx context.Context, u users.User, passwordHash string, token tokens.Token, trace event.TraceContext, idem *idempotency.Record) error {
	ev, err := event.New(event.UserCreated, u.ID, u.ID, u.Version, u.CreatedAt, trace, u.Data())
	if err != nil {
		return err
	}
	err = s.run(ctx, func(tx pgx.Tx, c *change) error {
		c.b.Queue(`INSERT INTO users (`+userColumns+`) VALUES ($1, $2, $3, $4, $5, $6)`,
			u.ID, u.Email, u.DisplayName, u.Version, u.CreatedAt, u.UpdatedAt)
		c.token(token)
		if passwordHash != "" {
			c.b.Queue(`INSERT INTO user_passwords (user_id, hash, updated_at) VALUES ($1, $2, $3)`, u.ID, passwordHash, u.CreatedAt)
		}
		c.b.Queue(`INSERT INTO user_stats (user_id, open, completed, version) VALUES ($1, 0, 0, 1)`, u.ID)
		if err := c.events(ev); err != nil {
			return err
		}
		if err := c.idempotency(idem, u.CreatedAt); err != nil {
			return err
		}
		return c.send(ctx, tx, "create user")
	})
	if sharedpg.IsUniqueViolation(err, "users_email_key") {
		return users.ErrEmailTaken
	}
	return err
}

const tokenColumns = `id, user_id, created_at, expires_at, last_used_at`

func scanToken(row scanner) (tokens.Token, error) {
	var t tokens.Token
	err := row.Scan(&t.ID, &t.UserID, &t.CreatedAt, &t.ExpiresAt, &t.LastUsedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return t, tokens.ErrNotFound
	}
	if err != nil {
		return t, fmt.Errorf("read token: %w", err)
	}
	t.CreatedAt, t.ExpiresAt, t.LastUsedAt = t.CreatedAt.UTC(), utc(t.ExpiresAt), utc(t.LastUsedAt)
	return t, nil
}

// TokenByHash returns the token whose hash is tokenHash, or tokens.ErrNotFound. An
// expired token is returned too: the caller judges expiry by its own clock. The lookup
// by hash is timing-safe: see package tokens.
func (s *Store) TokenByHash(ctx context.Context, tokenHash []byte) (tokens.Token, error) {
	t, err := scanToken(s.pool.QueryRow(ctx, `SELECT `+tokenColumns+` FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL`, tokenHash))
	if err != nil && !errors.Is(err, tokens.ErrNotFound) {
		return t, fmt.Errorf("look up token: %w", err)
	}
	t.Hash = tokenHash
	return t, err
}

// Tokens returns the user's tokens that have not expired at now, oldest first.
func (s *Store) Tokens(ctx context.Context, owner uuid.UUID, now time.Time) ([]tokens.Token, error) {
	rows, err := s.pool.Query(ctx, `
SELECT `+tokenColumns+` FROM api_tokens
WHERE user_id = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)
ORDER BY created_at, id`, owner, now)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (tokens.Token, error) { return scanToken(r) })
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return out, nil
}

// CreateToken stores another token of its user, with idem, the idempotency record of
// the request, when it has one. The user's expired tokens are deleted first and do not
// count. It fails with tokens.ErrTooMany when the user holds tokens.MaxPerUser live
// tokens already, with users.ErrNotFound when the user was deleted meanwhile, and with
// idempotency.ErrRace as CreateUser does. Locking the user row serializes concurrent
// issues, so the bound holds under READ COMMITTED too.
func (s *Store) CreateToken(ctx context.Context, token tokens.Token, idem *idempotency.Record) error {
	_, err := s.createToken(ctx, token, idem, false)
	return err
}

// CreateSignInToken stores the token of a sign-in as CreateToken does, except that a
// user at tokens.MaxPerUser loses their oldest live tokens instead of the sign-in
// failing: a user who signs in from cleared browsers again and again must not be
// locked out by tokens whose secrets are gone. It returns the hashes of the tokens
// it revoked, for the caller's cache.
func (s *Store) CreateSignInToken(ctx context.Context, token tokens.Token) ([][]byte, error) {
	return s.createToken(ctx, token, nil, true)
}

func (s *Store) createToken(ctx context.Context, token tokens.Token, idem *idempotency.Record, evict bool) ([][]byte, error) {
	owner := token.UserID
	var evicted [][]byte
	err := s.run(ctx, func(tx pgx.Tx, c *change) error {
		evicted = nil
		var n int
		err := tx.QueryRow(ctx, `SELECT id FROM users WHERE id = $1 FOR UPDATE`, owner).Scan(new(uuid.UUID))
		if errors.Is(err, pgx.ErrNoRows) {
			return users.ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("lock user: %w", err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM api_tokens WHERE user_id = $1 AND expires_at <= $2`, owner, token.CreatedAt); err != nil {
			return fmt.Errorf("delete expired tokens: %w", err)
		}
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM api_tokens WHERE user_id = $1 AND revoked_at IS NULL`, owner).Scan(&n); err != nil {
			return fmt.Errorf("count tokens: %w", err)
		}
		if n >= tokens.MaxPerUser && !evict {
			return tokens.ErrTooMany
		}
		if n >= tokens.MaxPerUser {
			rows, err := tx.Query(ctx, `
DELETE FROM api_tokens WHERE token_hash IN (
    SELECT token_hash FROM api_tokens WHERE user_id = $1 AND revoked_at IS NULL ORDER BY created_at, id LIMIT $2)
RETURNING token_hash`, owner, n-tokens.MaxPerUser+1)
			if err != nil {
				return fmt.Errorf("revoke oldest tokens: %w", err)
			}
			if evicted, err = pgx.CollectRows(rows, pgx.RowTo[[]byte]); err != nil {
				return fmt.Errorf("revoke oldest tokens: %w", err)
			}
		}
		c.token(token)
		if err := c.idempotency(idem, token.CreatedAt); err != nil {
			return err
		}
		return c.send(ctx, tx, "create token")
	})
	return evicted, err
}

// Credentials returns the id and password hash of the user with email, or
// users.ErrNotFound when there is no such user or they have set no password.
func (s *Store) Credentials(ctx context.Context, email string) (uuid.UUID, string, error) {
	var (
		id   uuid.UUID
		hash string
	)
	err := s.pool.QueryRow(ctx, `
SELECT u.id, p.hash FROM users u JOIN user_passwords p ON p.user_id = u.id WHERE u.email = $1`, email).Scan(&id, &hash)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return uuid.Nil, "", users.ErrNotFound
	case err != nil:
		return uuid.Nil, "", fmt.Errorf("look up credentials: %w", err)
	}
	return id, hash, nil
}

// PasswordHash returns the user's password hash, or "" when they have set none.
func (s *Store) PasswordHash(ctx context.Context, id uuid.UUID) (string, error) {
	var hash string
	err := s.pool.QueryRow(ctx, `SELECT hash FROM user_passwords WHERE user_id = $1`, id).Scan(&hash)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("read password hash: %w", err)
	}
	return hash, nil
}

// SetPassword replaces the user's password hash old ("" when they have none) with
// hash. It fails with users.ErrPasswordChanged when the stored hash is no longer old
// (a concurrent change won), and with users.ErrNotFound when the user is gone.
func (s *Store) SetPassword(ctx context.Context, id uuid.UUID, old, hash string) error {
	now := s.Now()
	err := s.run(ctx, func(tx pgx.Tx, c *change) error {
		if old == "" {
			c.b.Queue(`INSERT INTO user_passwords (user_id, hash, updated_at) VALUES ($1, $2, $3) ON CONFLICT (user_id) DO NOTHING`,
				id, hash, now).Exec(passwordSet)
		} else {
			c.b.Queue(`UPDATE user_passwords SET hash = $2, updated_at = $3 WHERE user_id = $1 AND hash = $4`,
				id, hash, now, old).Exec(passwordSet)
		}
		return c.send(ctx, tx, "set password")
	})
	if sharedpg.SQLState(err) == "23503" { // foreign key: the user is gone
		return users.ErrNotFound
	}
	return err
}

func passwordSet(tag pgconn.CommandTag) error {
	if tag.RowsAffected() == 0 {
		return users.ErrPasswordChanged
	}
	return nil
}

// RevokeToken makes the token id of owner unusable from now on and returns its hash,
// or fails with tokens.ErrNotFound when owner has no such token. The row is deleted
// rather than marked revoked, so that issuing and revoking tokens in a loop leaves
// nothing behind.
func (s *Store) RevokeToken(ctx context.Context, owner, id uuid.UUID) ([]byte, error) {
	var hash []byte
	err := s.run(ctx, func(tx pgx.Tx, c *change) error {
		c.tokenGone(id)
		err := tx.QueryRow(ctx, `DELETE FROM api_tokens WHERE id = $1 AND user_id = $2 RETURNING token_hash`, id, owner).Scan(&hash)
		if errors.Is(err, pgx.ErrNoRows) {
			return tokens.ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("revoke token: %w", err)
		}
		return nil
	})
	return hash, err
}

// RecordTokenUse sets the token's last use to period (see tokens.UsePeriod) unless it
// is that late already, so that concurrent and repeated calls write once per period.
func (s *Store) RecordTokenUse(ctx context.Context, id uuid.UUID, period time.Time) error {
	return s.run(ctx, func(tx pgx.Tx, c *change) error {
		c.b.Queue(`UPDATE api_tokens SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)`, id, period)
		return c.send(ctx, tx, "record token use")
	})
}

// User returns one user.
func (s *Store) User(ctx context.Context, id uuid.UUID) (users.User, error) {
	return scanUser(s.pool.QueryRow(ctx, `SELECT `+userColumns+` FROM users WHERE id = $1`, id))
}

// UpdateUser applies p to the user and stores the result with its user.updated event.
// When ifMatch is not zero and differs from the current version it fails with
// users.ErrVersionMismatch and changes nothing.
func (s *Store) UpdateUser(ctx context.Context, id uuid.UUID, ifMatch int64, p users.Patch, trace event.TraceContext) (users.User, error) {
	var out users.User
	err := s.run(ctx, func(tx pgx.Tx, c *change) error {
		u, err := scanUser(tx.QueryRow(ctx, `SELECT `+userColumns+` FROM users WHERE id = $1 FOR UPDATE`, id))
		if err != nil {
			return err
		}
		if ifMatch != 0 && ifMatch != u.Version {
			return users.ErrVersionMismatch
		}
		out = u.Apply(p, s.Now())
		ev, err := event.New(event.UserUpdated, out.ID, out.ID, out.Version, out.UpdatedAt, trace, out.Data())
		if err != nil {
			return err
		}
		c.b.Queue(`UPDATE users SET email = $2, display_name = $3, version = $4, updated_at = $5 WHERE id = $1`,
			out.ID, out.Email, out.DisplayName, out.Version, out.UpdatedAt)
		if err := c.events(ev); err != nil {
			return err
		}
		return c.send(ctx, tx, "update user")
	})
	if sharedpg.IsUniqueViolation(err, "users_email_key") {
		return users.User{}, users.ErrEmailTaken
	}
	return out, err
}

// DeleteUser deletes the user, every todo of theirs and their tokens and idempotency
// keys in one transaction, with one todo.deleted event per todo and then user.deleted.
// Locking the user row first makes a concurrent todo insert for this user either
// finish before the delete sees the user's todos or fail its foreign key check. It
// returns the version of the user's tombstone; ifMatch works as in UpdateUser.
func (s *Store) DeleteUser(ctx context.Context, id uuid.UUID, ifMatch int64, trace event.TraceContext) (int64, error) {
	var version int64
	err := s.run(ctx, func(tx pgx.Tx, c *change) error {
		u, err := scanUser(tx.QueryRow(ctx, `SELECT `+userColumns+` FROM users WHERE id = $1 FOR UPDATE`, id))
		if err != nil {
			return err
		}
		if ifMatch != 0 && ifMatch != u.Version {
			return users.ErrVersionMismatch
		}
		version = u.Version + 1
		now := s.Now()
		rows, err := tx.Query(ctx, `DELETE FROM todos WHERE user_id = $1 RETURNING id, version`, id)
		if err != nil {
			return fmt.Errorf("delete todos: %w", err)
		}
		var events []event.Envelope
		var todoID uuid.UUID
		var version int64
		_, err = pgx.ForEachRow(rows, []any{&todoID, &version}, func() error {
			ev, err := tombstone(event.TodoDeleted, todoID, id, version+1, now, trace)
			events = append(events, ev)
			return err
		})
		if err != nil {
			return fmt.Errorf("delete todos: %w", err)
		}
		ev, err := tombstone(event.UserDeleted, id, id, u.Version+1, now, trace)
		if err != nil {
			return err
		}
		c.b.Queue(`DELETE FROM idempotency_keys WHERE scope = $1`, idempotency.UserScope(id.String()))
		// The stats row stays as the deleted user's last snapshot, which every event
		// below carries.
		c.b.Queue(`UPDATE user_stats SET open = 0, completed = 0, version = version + 1, deleted = true WHERE user_id = $1`, id)
		// api_tokens go with the user (ON DELETE CASCADE).
		c.b.Queue(`DELETE FROM users WHERE id = $1`, id)
		if err := c.events(append(events, ev)...); err != nil {
			return err
		}
		return c.send(ctx, tx, "delete user")
	})
	return version, err
}

func tombstone(eventType string, id, owner uuid.UUID, version int64, now time.Time, trace event.TraceContext) (event.Envelope, error) {
	return event.New(eventType, id, owner, version, now, trace,
		event.Tombstone{ID: id, OwnerID: owner, Version: version, DeletedAt: now})
}

const todoColumns = `id, user_id, title, notes, completed, completed_at, due, priority, version, created_at, updated_at`

type scanner interface{ Scan(dest ...any) error }

func scanTodo(row scanner) (todos.Todo, error) {
	var t todos.Todo
	err := row.Scan(&t.ID, &t.UserID, &t.Title, &t.Notes, &t.Completed, &t.CompletedAt, &t.Due, &t.Priority,
		&t.Version, &t.CreatedAt, &t.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return t, todos.ErrNotFound
	}
	if err != nil {
		return t, fmt.Errorf("read todo: %w", err)
	}
	t.CreatedAt, t.UpdatedAt = t.CreatedAt.UTC(), t.UpdatedAt.UTC()
	t.CompletedAt, t.Due = utc(t.CompletedAt), utc(t.Due)
	return t, nil
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// CreateTodo stores a new todo with its todo.created event and idem, as CreateUser
// does, and returns the owner's stats version after it. It fails with
// users.ErrNotFound when the owner was deleted meanwhile and with
// idempotency.ErrRace when a concurrent request stored the same key first.
func (s *Store) CreateTodo(ctx context.Context, t todos.Todo, trace event.TraceContext, idem *idempotency.Record) (int64, error) {
	ev, err := event.New(event.TodoCreated, t.ID, t.UserID, t.Version, t.CreatedAt, trace, t.Data())
	if err != nil {
		return 0, err
	}
	var statsVersion int64
	// One round trip: every statement is known before the first is sent, and each
	// refusal (the owner gone, the cap, a concurrent key) is raised by the server.
	err = s.runAtomic(ctx, func(c *change) error {
		// The insert first: its foreign key check waits for a concurrent delete of the
		// owner, which takes the stats row after the user row, so the two cannot
		// deadlock.
		c.b.Queue(`INSERT INTO todos (`+todoColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
			t.ID, t.UserID, t.Title, t.Notes, t.Completed, t.CompletedAt, t.Due, t.Priority, t.Version, t.CreatedAt, t.UpdatedAt)
		open, completed := delta(&t)
		c.countTodos(t.UserID, open, completed, s.maxTodos, &statsVersion)
		if err := c.events(ev); err != nil {
			return err
		}
		return c.idempotency(idem, t.CreatedAt)
	})
	switch {
	case sharedpg.SQLState(err) == "23503": // foreign key: the owner is gone
		return 0, users.ErrNotFound
	case sharedpg.IsCheckViolation(err, "todo_cap_reached"):
		return 0, todos.ErrTooMany
	case err != nil:
		return 0, fmt.Errorf("create todo: %w", err)
	}
	return statsVersion, nil
}

// Todo returns one todo of owner, or todos.ErrNotFound, also when it belongs to
// someone else.
func (s *Store) Todo(ctx context.Context, owner, id uuid.UUID) (todos.Todo, error) {
	return scanTodo(s.pool.QueryRow(ctx, `SELECT `+todoColumns+` FROM todos WHERE id = $1 AND user_id = $2`, id, owner))
}

// ListTodos returns up to limit todos of owner matching f, in id (creation) order,
// starting after the todo with id after (uuid.Nil: from the first).
func (s *Store) ListTodos(ctx context.Context, owner uuid.UUID, f todos.Filter, after uuid.UUID, limit int) ([]todos.Todo, error) {
	var afterArg *uuid.UUID
	if after != uuid.Nil {
		afterArg = &after
	}
	rows, err := s.pool.Query(ctx, `
SELECT `+todoColumns+` FROM todos
WHERE user_id = $1
  AND ($2::BOOL IS NULL OR completed = $2)
  AND ($3::TIMESTAMPTZ IS NULL OR due < $3)
  AND ($4::TIMESTAMPTZ IS NULL OR due > $4)
  AND ($5::UUID IS NULL OR id > $5)
  AND ($7::TIMESTAMPTZ IS NULL OR updated_at >= $7)
ORDER BY id
LIMIT $6`, owner, f.Completed, f.DueBefore, f.DueAfter, afterArg, limit, f.UpdatedSince)
	if err != nil {
		return nil, fmt.Errorf("list todos: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (todos.Todo, error) { return scanTodo(r) })
	if err != nil {
		return nil, fmt.Errorf("list todos: %w", err)
	}
	return out, nil
}

// UpdateTodo applies p to a todo of owner and stores it with its todo.updated event,
// and returns it with the owner's stats version after it. When ifMatch is not zero and
// differs from the current version it fails with todos.ErrVersionMismatch and changes
// nothing.
func (s *Store) UpdateTodo(ctx context.Context, owner, id uuid.UUID, ifMatch int64, p todos.Patch, trace event.TraceContext) (todos.Todo, int64, error) {
	var (
		out          todos.Todo
		statsVersion int64
	)
	err := s.run(ctx, func(tx pgx.Tx, c *change) error {
		t, err := scanTodo(tx.QueryRow(ctx, `SELECT `+todoColumns+` FROM todos WHERE id = $1 AND user_id = $2 FOR UPDATE`, id, owner))
		if err != nil {
			return err
		}
		if ifMatch != 0 && ifMatch != t.Version {
			return todos.ErrVersionMismatch
		}
		out = t.Apply(p, s.Now())
		ev, err := event.New(event.TodoUpdated, out.ID, out.UserID, out.Version, out.UpdatedAt, trace, out.Data())
		if err != nil {
			return err
		}
		c.b.Queue(`
UPDATE todos SET title = $3, notes = $4, completed = $5, completed_at = $6, due = $7, priority = $8,
                 version = $9, updated_at = $10
WHERE id = $1 AND user_id = $2`,
			out.ID, out.UserID, out.Title, out.Notes, out.Completed, out.CompletedAt, out.Due, out.Priority,
			out.Version, out.UpdatedAt)
		newOpen, newCompleted := delta(&out)
		oldOpen, oldCompleted := delta(&t)
		c.countTodos(owner, newOpen-oldOpen, newCompleted-oldCompleted, 0, &statsVersion)
		if err := c.events(ev); err != nil {
			return err
		}
		return c.send(ctx, tx, "update todo")
	})
	return out, statsVersion, err
}

// DeleteTodo deletes a todo of owner with its todo.deleted event and returns the
// tombstone's version and the owner's stats version after it. ifMatch works as in
// UpdateTodo.
func (s *Store) DeleteTodo(ctx context.Context, owner, id uuid.UUID, ifMatch int64, trace event.TraceContext) (int64, int64, error) {
	var version, statsVersion int64
	err := s.run(ctx, func(tx pgx.Tx, c *change) error {
		var (
			current   int64
			completed bool
		)
		err := tx.QueryRow(ctx, `SELECT version, completed FROM todos WHERE id = $1 AND user_id = $2 FOR UPDATE`, id, owner).
			Scan(&current, &completed)
		if errors.Is(err, pgx.ErrNoRows) {
			return todos.ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("select todo: %w", err)
		}
		if ifMatch != 0 && ifMatch != current {
			return todos.ErrVersionMismatch
		}
		version = current + 1
		ev, err := tombstone(event.TodoDeleted, id, owner, version, s.Now(), trace)
		if err != nil {
			return err
		}
		c.b.Queue(`DELETE FROM todos WHERE id = $1 AND user_id = $2`, id, owner)
		open, done := delta(&todos.Todo{Completed: completed})
		c.countTodos(owner, -open, -done, 0, &statsVersion)
		if err := c.events(ev); err != nil {
			return err
		}
		return c.send(ctx, tx, "delete todo")
	})
	return version, statsVersion, err
}

// StatsVersion returns the owner's current stats version: the read-your-writes
// position of a replayed write, which is at least the one the write left.
func (s *Store) StatsVersion(ctx context.Context, owner uuid.UUID) (int64, error) {
	var v int64
	if err := s.pool.QueryRow(ctx, `SELECT version FROM user_stats WHERE user_id = $1`, owner).Scan(&v); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return 0, users.ErrNotFound
		}
		return 0, fmt.Errorf("read stats version: %w", err)
	}
	return v, nil
}

// Idempotency returns the live record of a key, or false when there is none.
func (s *Store) Idempotency(ctx context.Context, scope, key string) (idempotency.Record, bool, error) {
	r := idempotency.Record{Scope: scope, Key: key}
	var headers []byte
	err := s.pool.QueryRow(ctx, `
SELECT request_hash, status_code, response_headers, response_body FROM idempotency_keys
WHERE scope = $1 AND idem_key = $2 AND created_at > $3`, scope, key, s.now().Add(-idempotency.TTL)).
		Scan(&r.Fingerprint, &r.Response.Status, &headers, &r.Response.Body)
	if errors.Is(err, pgx.ErrNoRows) {
		return r, false, nil
	}
	if err != nil {
		return r, false, fmt.Errorf("select idempotency key: %w", err)
	}
	if err := json.Unmarshal(headers, &r.Response.Headers); err != nil {
		return r, false, fmt.Errorf("decode stored headers: %w", err)
	}
	return r, true, nil
}

// DeleteExpiredIdempotencyKeys deletes up to limit keys older than the TTL and returns
// how many it deleted. Bounded batches keep each transaction short.
func (s *Store) DeleteExpiredIdempotencyKeys(ctx context.Context, limit int) (int64, error) {
	tag, err := s.pool.Exec(ctx, `
DELETE FROM idempotency_keys WHERE (scope, idem_key) IN (
    SELECT scope, idem_key FROM idempotency_keys WHERE created_at <= $1 ORDER BY created_at LIMIT $2)`,
		s.now().Add(-idempotency.TTL), limit)
	if err != nil {
		return 0, fmt.Errorf("delete expired idempotency keys: %w", err)
	}
	return tag.RowsAffected(), nil
}
