package postgres_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/services/api/internal/idempotency"
	"github.com/outboxtodo/outboxtodo/services/api/internal/postgres"
	"github.com/outboxtodo/outboxtodo/services/api/internal/todos"
	"github.com/outboxtodo/outboxtodo/services/api/internal/users"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/outbox"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

func TestSweepDeletesOnlyExpiredKeysInBatches(t *testing.T) {
	t.Parallel()
	ctx, s, pool := newStore(t, false)
	u := createUser(ctx, t, s, users.SignUp{Email: "a@example.com", DisplayName: "A"})
	for i := range 5 {
		td := todos.New{Title: "t", Priority: todos.Normal}.Todo(uuid.New(), u.ID, s.Now())
		rec := &idempotency.Record{Scope: "s", Key: fmt.Sprint(i), Fingerprint: []byte{1},
			Response: idempotency.Response{Status: 201, Headers: http.Header{}, Body: []byte("{}")}}
		if _, err := s.CreateTodo(ctx, td, event.TraceContext{}, rec); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pool.Exec(ctx, `UPDATE idempotency_keys SET created_at = created_at - interval '25 hours' WHERE idem_key IN ('0', '1', '2')`); err != nil {
		t.Fatal(err)
	}
	for _, want := range []int64{2, 1, 0} {
		n, err := s.DeleteExpiredIdempotencyKeys(ctx, 2)
		if err != nil || n != want {
			t.Fatalf("deleted %d (%v), want %d", n, err, want)
		}
	}
	var left int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM idempotency_keys`).Scan(&left); err != nil || left != 2 {
		t.Fatalf("%d keys left (%v), want 2", left, err)
	}
}

func TestWritesNotifyThePublisher(t *testing.T) {
	t.Parallel()
	pool, dbURL := dbtest.NewPool(t)
	ctx := sharedtest.Context(t, 30*time.Second)
	listener := listen(ctx, t, dbURL)

	// Writes notify only while a publisher is marked idle and listening (see
	// TestNotifyOnlyWhileAListenerIsMarked for the unmarked case).
	markListening(ctx, t, pool, "publisher", time.Minute)
	s := postgres.New(pool, true)
	createUser(ctx, t, s, users.SignUp{Email: "n@example.com", DisplayName: "N"})
	n, err := listener.WaitForNotification(ctx)
	if err != nil {
		t.Fatalf("no notification after a committed write: %v", err)
	}
	if n.Channel != outbox.Channel {
		t.Fatalf("notification on %q, want %q", n.Channel, outbox.Channel)
	}
}
