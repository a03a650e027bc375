package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/services/api/internal/postgres"
	"github.com/outboxtodo/outboxtodo/services/api/internal/tokens"
	"github.com/outboxtodo/outboxtodo/services/api/internal/users"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/outbox"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

// newToken is a token of owner to store.
func newToken(owner uuid.UUID, now time.Time) tokens.Token {
	_, hash := tokens.New()
	return tokens.Token{ID: uuid.New(), UserID: owner, Hash: hash, CreatedAt: now}
}

// newStore is a store on a fresh, migrated database (see postgres.New for notify and
// opts), the pool under it, and a context that ends after 30 seconds or with the test.
func newStore(t *testing.T, notify bool, opts ...postgres.Option) (context.Context, *postgres.Store, *pgxpool.Pool) {
	t.Helper()
	pool, _ := dbtest.NewPool(t)
	ctx := sharedtest.Context(t, 30*time.Second)
	return ctx, postgres.New(pool, notify, opts...), pool
}

// createUser stores the user su signs up, without a password, with a token.
func createUser(ctx context.Context, t *testing.T, s *postgres.Store, su users.SignUp) users.User {
	t.Helper()
	u := su.User(uuid.New(), s.Now())
	if err := s.CreateUser(ctx, u, "", newToken(u.ID, s.Now()), event.TraceContext{}, nil); err != nil {
		t.Fatalf("create user %s: %v", su.Email, err)
	}
	return u
}

// listen is a connection to dbURL that listens on the outbox's channel until the test
// ends.
func listen(ctx context.Context, t *testing.T, dbURL string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	if _, err := conn.Exec(ctx, "LISTEN "+outbox.Channel); err != nil {
		t.Fatal(err)
	}
	return conn
}

// count runs a query that counts.
func count(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// markListening plays a publisher replica that marks itself idle and listening until
// ttl from now, refreshing its mark (the publisher's outboxdb.MarkListening);
// unmarkListening plays it going busy.
func markListening(ctx context.Context, t *testing.T, pool *pgxpool.Pool, replica string, ttl time.Duration) {
	t.Helper()
	if _, err := pool.Exec(ctx, `
INSERT INTO outbox_listeners (replica_id, expires_at) VALUES ($1, now() + $2::bigint * interval '1 millisecond')
ON CONFLICT (replica_id) DO UPDATE SET expires_at = excluded.expires_at`, replica, ttl.Milliseconds()); err != nil {
		t.Fatal(err)
	}
}

func unmarkListening(ctx context.Context, t *testing.T, pool *pgxpool.Pool, replica string) {
	t.Helper()
	if _, err := pool.Exec(ctx, "DELETE FROM outbox_listeners WHERE replica_id = $1", replica); err != nil {
		t.Fatal(err)
	}
}
