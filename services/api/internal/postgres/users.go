package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/outboxtodo/outboxtodo/services/api/internal/idempotency"
	"github.com/outboxtodo/outboxtodo/services/api/internal/tokens"
	"github.com/outboxtodo/outboxtodo/services/api/internal/users"
	"github.com/outboxtodo/outboxtodo/shared/event"
	sharedpg "github.com/outboxtodo/outboxtodo/shared/postgres"
)

// The statements on users.
const (
	userColumns = `id, email, display_name, version, created_at, updated_at`

	insertUserSQL = `INSERT INTO users (` + userColumns + `) VALUES ($1, $2, $3, $4, $5, $6)`
	selectUserSQL = `SELECT ` + userColumns + ` FROM users WHERE id = $1`
	// lockUserSQL reads a user for a change of it, or of what hangs on it.
	lockUserSQL   = `SELECT ` + userColumns + ` FROM users WHERE id = $1 FOR UPDATE`
	lockUserIDSQL = `SELECT id FROM users WHERE id = $1 FOR UPDATE`
	updateUserSQL = `UPDATE users SET email = $2, display_name = $3, version = $4, updated_at = $5 WHERE id = $1`
	// api_tokens go with the user (ON DELETE CASCADE).
	deleteUserSQL = `DELETE FROM users WHERE id = $1`
	allUsersSQL   = `SELECT ` + userColumns + ` FROM users`
	userIDsSQL    = `SELECT id FROM users`

	// usersEmailKey is the unique constraint on users.email.
	usersEmailKey = "users_email_key"
)

func scanUser(row scanner) (users.User, error) {
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
		c.b.Queue(insertUserSQL, u.ID, u.Email, u.DisplayName, u.Version, u.CreatedAt, u.UpdatedAt)
		c.token(token)
		if passwordHash != "" {
			c.b.Queue(insertPasswordSQL, u.ID, passwordHash, u.CreatedAt)
		}
		c.b.Queue(insertStatsSQL, u.ID)
		if err := c.events(ev); err != nil {
			return err
		}
		if err := c.idempotency(idem, u.CreatedAt); err != nil {
			return err
		}
		return c.send(ctx, tx, "create user")
	})
	if sharedpg.IsUniqueViolation(err, usersEmailKey) {
		return users.ErrEmailTaken
	}
	return err
}

// User returns one user.
func (s *Store) User(ctx context.Context, id uuid.UUID) (users.User, error) {
	return scanUser(s.pool.QueryRow(ctx, selectUserSQL, id))
}

// UpdateUser applies p to the user and stores the result with its user.updated event.
// When ifMatch is not zero and differs from the current version it fails with
// users.ErrVersionMismatch and changes nothing.
func (s *Store) UpdateUser(ctx context.Context, id uuid.UUID, ifMatch int64, p users.Patch, trace event.TraceContext) (users.User, error) {
	var out users.User
	err := s.run(ctx, func(tx pgx.Tx, c *change) error {
		u, err := lockUser(ctx, tx, id, ifMatch)
		if err != nil {
			return err
		}
		out = u.Apply(p, s.Now())
		ev, err := event.New(event.UserUpdated, out.ID, out.ID, out.Version, out.UpdatedAt, trace, out.Data())
		if err != nil {
			return err
		}
		c.b.Queue(updateUserSQL, out.ID, out.Email, out.DisplayName, out.Version, out.UpdatedAt)
		if err := c.events(ev); err != nil {
			return err
		}
		return c.send(ctx, tx, "update user")
	})
	if sharedpg.IsUniqueViolation(err, usersEmailKey) {
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
		u, err := lockUser(ctx, tx, id, ifMatch)
		if err != nil {
			return err
		}
		version = u.Version + 1
		now := s.Now()
		rows, err := tx.Query(ctx, deleteUserTodosSQL, id)
		if err != nil {
			return fmt.Errorf("delete todos: %w", err)
		}
		var events []event.Envelope
		var todoID uuid.UUID
		var version int64
		_, err = pgx.ForEachRow(rows, []any{&todoID, &version}, func() error {
			ev, err := event.NewTombstone(event.TodoDeleted, todoID, id, version+1, now, trace)
			events = append(events, ev)
			return err
		})
		if err != nil {
			return fmt.Errorf("delete todos: %w", err)
		}
		ev, err := event.NewTombstone(event.UserDeleted, id, id, u.Version+1, now, trace)
		if err != nil {
			return err
		}
		c.b.Queue(deleteUserKeysSQL, idempotency.UserScope(id.String()))
		// The stats row stays as the deleted user's last snapshot, which every event
		// below carries.
		c.b.Queue(markStatsDeletedSQL, id)
		c.b.Queue(deleteUserSQL, id)
		if err := c.events(append(events, ev)...); err != nil {
			return err
		}
		return c.send(ctx, tx, "delete user")
	})
	return version, err
}

// LockUser reads a user's current state and locks its row until the end of t, so that
// an event built from it carries the version the row keeps. It fails with
// users.ErrNotFound when there is no such user.
func (t *Tx) LockUser(ctx context.Context, id uuid.UUID) (users.User, error) {
	return lockUser(ctx, t.tx, id, 0)
}

// lockUser reads a user for a change, locking its row, and fails with
// users.ErrVersionMismatch when ifMatch is not zero and not the user's version.
func lockUser(ctx context.Context, tx pgx.Tx, id uuid.UUID, ifMatch int64) (users.User, error) {
	u, err := scanUser(tx.QueryRow(ctx, lockUserSQL, id))
	if err == nil && ifMatch != 0 && ifMatch != u.Version {
		err = users.ErrVersionMismatch
	}
	return u, err
}
