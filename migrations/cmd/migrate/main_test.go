package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboxtodo/outboxtodo/migrations"
	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
)

// syncBuffer collects log lines written by another goroutine.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// unapplyLatest makes the database look one migration behind by removing goose's record
// of the latest one, and returns a function that restores the record, as the migration
// Job would by applying it.
func unapplyLatest(t *testing.T, url string) (restore func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, latest, err := migrations.Version(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	exec := func(sql string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, sql, latest); err != nil {
			t.Fatal(err)
		}
	}
	exec(`DELETE FROM goose_db_version WHERE version_id = $1`)
	return func() { exec(`INSERT INTO goose_db_version (version_id, is_applied) VALUES ($1, true)`) }
}

func TestWaitForSchemaReturnsWhenCurrent(t *testing.T) {
	t.Parallel()
	url := dbtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := waitForSchema(ctx, slog.New(slog.DiscardHandler), url, 10*time.Millisecond); err != nil {
		t.Fatalf("wait on a current schema: %v", err)
	}
}

func TestWaitForSchemaBlocksUntilMigrated(t *testing.T) {
	t.Parallel()
	url := dbtest.New(t)
	restore := unapplyLatest(t, url)

	var logs syncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- waitForSchema(ctx, log, url, 10*time.Millisecond) }()

	// It must have seen the old version and still be waiting before the "Job" runs.
	for !strings.Contains(logs.String(), "waiting for migrations") {
		select {
		case err := <-done:
			t.Fatalf("wait returned %v on a schema one version behind", err)
		case <-ctx.Done():
			t.Fatalf("wait never reported waiting; logs:\n%s", logs.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	restore()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("wait after migration: %v", err)
		}
	case <-ctx.Done():
		t.Fatalf("wait did not return after migration; logs:\n%s", logs.String())
	}
}

func TestWaitForSchemaGivesUpWithItsContext(t *testing.T) {
	t.Parallel()
	url := dbtest.New(t)
	unapplyLatest(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := waitForSchema(ctx, slog.New(slog.DiscardHandler), url, 10*time.Millisecond)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait on a schema that never catches up = %v, want the context's deadline", err)
	}
}
