package outbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/shared/outbox"
	"github.com/outboxtodo/outboxtodo/shared/postgres"
)

// A write notifies only while a publisher replica is marked idle and listening, and
// until its mark expires: with no mark, a commit pays no pg_notify.
func TestNotifyOnlyWhileAListenerIsMarked(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, dbURL := dbtest.NewPool(t)
	listener, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close(context.WithoutCancel(ctx))
	if _, err := listener.Exec(ctx, "LISTEN "+outbox.Channel); err != nil {
		t.Fatal(err)
	}

	// notified writes one outbox row the way the API does (insert and notify queued in
	// one batch) and reports whether its notification arrived. PostgreSQL delivers
	// notifications in commit order, so a marker sent after the write's commit arrives
	// after the write's own notification, if it sent one.
	owner := uuid.New()
	version := int64(0)
	notified := func() bool {
		t.Helper()
		version++
		err := postgres.WithTx(ctx, pool, func(tx pgx.Tx) error {
			var b pgx.Batch
			if err := outbox.QueueInsert(&b, todoEvent(t, owner, version)); err != nil {
				return err
			}
			outbox.QueueNotify(&b)
			return tx.SendBatch(ctx, &b).Close()
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pool.Exec(ctx, "SELECT pg_notify($1, 'marker')", outbox.Channel); err != nil {
			t.Fatal(err)
		}
		n, err := listener.WaitForNotification(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n.Payload == "marker" {
			return false
		}
		if n, err := listener.WaitForNotification(ctx); err != nil || n.Payload != "marker" {
			t.Fatalf("after the write's notification: %+v, %v; want the marker", n, err)
		}
		return true
	}

	if notified() {
		t.Fatal("a write notified while no publisher was marked listening")
	}
	if err := outbox.MarkListening(ctx, pool, "a", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := outbox.MarkListening(ctx, pool, "b", time.Minute); err != nil {
		t.Fatal(err)
	}
	if !notified() {
		t.Fatal("a write sent no notification while publishers were marked listening")
	}
	if err := outbox.UnmarkListening(ctx, pool, "a"); err != nil {
		t.Fatal(err)
	}
	if !notified() {
		t.Fatal("a write sent no notification while one publisher was still marked listening")
	}
	if err := outbox.UnmarkListening(ctx, pool, "b"); err != nil {
		t.Fatal(err)
	}
	if notified() {
		t.Fatal("a write notified after every publisher was unmarked")
	}
	// A mark that has expired (a replica that died idle) no longer costs writes.
	if err := outbox.MarkListening(ctx, pool, "dead", 0); err != nil {
		t.Fatal(err)
	}
	if notified() {
		t.Fatal("a write notified for an expired mark")
	}
	// Refreshing an expired mark revives it.
	if err := outbox.MarkListening(ctx, pool, "dead", time.Minute); err != nil {
		t.Fatal(err)
	}
	if !notified() {
		t.Fatal("a write sent no notification after the mark was refreshed")
	}
}
