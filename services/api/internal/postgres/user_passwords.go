package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outboxtodo/outboxtodo/services/api/internal/users"
	sharedpg "github.com/outboxtodo/outboxtodo/shared/postgres"
)

// The statements on user_passwords.
const (
	insertPasswordSQL = `INSERT INTO user_passwords (user_id, hash, updated_at) VALUES ($1, $2, $3)`
	credentialsSQL    = `
SELECT u.id, p.hash FROM users u JOIN user_passwords p ON p.user_id = u.id WHERE u.email = $1`
	selectPasswordSQL = `SELECT hash FROM user_passwords WHERE user_id = $1`
	// setFirstPasswordSQL and changePasswordSQL change no row when a concurrent change
	// won (see SetPassword).
	setFirstPasswordSQL = `INSERT INTO user_passwords (user_id, hash, updated_at) VALUES ($1, $2, $3) ON CONFLICT (user_id) DO NOTHING`
	changePasswordSQL   = `UPDATE user_passwords SET hash = $2, updated_at = $3 WHERE user_id = $1 AND hash = $4`
)

// Credentials returns the id and password hash of the user with email, or
// users.ErrNotFound when there is no such user or they have set no password.
func (s *Store) Credentials(ctx context.Context, email string) (uuid.UUID, string, error) {
	var (
		id   uuid.UUID
		hash string
	)
	err := s.pool.QueryRow(ctx, credentialsSQL, email).Scan(&id, &hash)
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
	err := s.pool.QueryRow(ctx, selectPasswordSQL, id).Scan(&hash)
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
			c.b.Queue(setFirstPasswordSQL, id, hash, now).Exec(passwordSet)
		} else {
			c.b.Queue(changePasswordSQL, id, hash, now, old).Exec(passwordSet)
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
