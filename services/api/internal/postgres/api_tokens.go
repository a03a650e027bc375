package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/outboxtodo/outboxtodo/services/api/internal/idempotency"
	"github.com/outboxtodo/outboxtodo/services/api/internal/tokens"
	"github.com/outboxtodo/outboxtodo/services/api/internal/users"
	sharedpg "github.com/outboxtodo/outboxtodo/shared/postgres"
)

// The statements on api_tokens.
const (
	tokenColumns = `id, user_id, created_at, expires_at, last_used_at`

	insertTokenSQL = `INSERT INTO api_tokens (token_hash, id, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)`
	tokenExistsSQL = `SELECT EXISTS (SELECT 1 FROM api_tokens WHERE id = $1)`
	tokenByHashSQL = `SELECT ` + tokenColumns + ` FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL`
	liveTokensSQL  = `
SELECT ` + tokenColumns + ` FROM api_tokens
WHERE user_id = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)
ORDER BY created_at, id`
	deleteExpiredTokensSQL = `DELETE FROM api_tokens WHERE user_id = $1 AND expires_at <= $2`
	countTokensSQL         = `SELECT count(*) FROM api_tokens WHERE user_id = $1 AND revoked_at IS NULL`
	evictOldestTokensSQL   = `
DELETE FROM api_tokens WHERE token_hash IN (
    SELECT token_hash FROM api_tokens WHERE user_id = $1 AND revoked_at IS NULL ORDER BY created_at, id LIMIT $2)
RETURNING token_hash`
	revokeTokenSQL    = `DELETE FROM api_tokens WHERE id = $1 AND user_id = $2 RETURNING token_hash`
	recordTokenUseSQL = `UPDATE api_tokens SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)`
)

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
		if err := pool.QueryRow(ctx, tokenExistsSQL, id).Scan(&exists); err != nil {
			return false, fmt.Errorf("probe: %w", err)
		}
		return !exists, nil
	}
}

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
	t, err := scanToken(s.pool.QueryRow(ctx, tokenByHashSQL, tokenHash))
	if err != nil && !errors.Is(err, tokens.ErrNotFound) {
		return t, fmt.Errorf("look up token: %w", err)
	}
	t.Hash = tokenHash
	return t, err
}

// Tokens returns the user's tokens that have not expired at now, oldest first.
func (s *Store) Tokens(ctx context.Context, owner uuid.UUID, now time.Time) ([]tokens.Token, error) {
	rows, err := s.pool.Query(ctx, liveTokensSQL, owner, now)
	out, err := collect(rows, err, scanToken)
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
		err := tx.QueryRow(ctx, lockUserIDSQL, owner).Scan(new(uuid.UUID))
		if errors.Is(err, pgx.ErrNoRows) {
			return users.ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("lock user: %w", err)
		}
		if _, err := tx.Exec(ctx, deleteExpiredTokensSQL, owner, token.CreatedAt); err != nil {
			return fmt.Errorf("delete expired tokens: %w", err)
		}
		if err := tx.QueryRow(ctx, countTokensSQL, owner).Scan(&n); err != nil {
			return fmt.Errorf("count tokens: %w", err)
		}
		if n >= tokens.MaxPerUser && !evict {
			return tokens.ErrTooMany
		}
		if n >= tokens.MaxPerUser {
			rows, err := tx.Query(ctx, evictOldestTokensSQL, owner, n-tokens.MaxPerUser+1)
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

// RevokeToken makes the token id of owner unusable from now on and returns its hash,
// or fails with tokens.ErrNotFound when owner has no such token. The row is deleted
// rather than marked revoked, so that issuing and revoking tokens in a loop leaves
// nothing behind.
func (s *Store) RevokeToken(ctx context.Context, owner, id uuid.UUID) ([]byte, error) {
	var hash []byte
	err := s.run(ctx, func(tx pgx.Tx, c *change) error {
		c.tokenGone(id)
		err := tx.QueryRow(ctx, revokeTokenSQL, id, owner).Scan(&hash)
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
		c.b.Queue(recordTokenUseSQL, id, period)
		return c.send(ctx, tx, "record token use")
	})
}
