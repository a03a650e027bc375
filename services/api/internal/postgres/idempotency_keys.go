package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboxtodo/outboxtodo/services/api/internal/idempotency"
)

// The statements on idempotency_keys.
const (
	deleteExpiredKeySQL = `DELETE FROM idempotency_keys WHERE scope = $1 AND idem_key = $2 AND created_at <= $3`
	insertKeySQL        = `
INSERT INTO idempotency_keys (scope, idem_key, request_hash, status_code, response_headers, response_body, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)`
	deleteUserKeysSQL = `DELETE FROM idempotency_keys WHERE scope = $1`
	selectKeySQL      = `
SELECT request_hash, status_code, response_headers, response_body FROM idempotency_keys
WHERE scope = $1 AND idem_key = $2 AND created_at > $3`
	sweepKeysSQL = `
DELETE FROM idempotency_keys WHERE (scope, idem_key) IN (
    SELECT scope, idem_key FROM idempotency_keys WHERE created_at <= $1 ORDER BY created_at LIMIT $2)`

	// idempotencyKeyConstraint is the key of idempotency_keys: a write that stores a
	// key a concurrent request stored first fails on it (see idempotency).
	idempotencyKeyConstraint = "idempotency_keys_pkey"
)

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
	c.b.Queue(deleteExpiredKeySQL, rec.Scope, rec.Key, now.Add(-idempotency.TTL))
	c.b.Queue(insertKeySQL, rec.Scope, rec.Key, rec.Fingerprint, rec.Response.Status, headers, rec.Response.Body, now)
	return nil
}

// Idempotency returns the live record of a key, or false when there is none.
func (s *Store) Idempotency(ctx context.Context, scope, key string) (idempotency.Record, bool, error) {
	r := idempotency.Record{Scope: scope, Key: key}
	var headers []byte
	err := s.pool.QueryRow(ctx, selectKeySQL, scope, key, s.now().Add(-idempotency.TTL)).
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
	tag, err := s.pool.Exec(ctx, sweepKeysSQL, s.now().Add(-idempotency.TTL), limit)
	if err != nil {
		return 0, fmt.Errorf("delete expired idempotency keys: %w", err)
	}
	return tag.RowsAffected(), nil
}
