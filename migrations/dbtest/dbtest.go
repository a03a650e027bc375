// Package dbtest gives each test a fresh, migrated PostgreSQL database of its own and
// drops it when the test ends.
//
// The server is the one at TEST_DATABASE_URL (default: the local server with trust
// auth). A test never skips because the server is missing: it fails.
package dbtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxtodo/outboxtodo/migrations"
)

// DefaultAdminURL is used when TEST_DATABASE_URL is unset.
const DefaultAdminURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// New creates a database, applies every migration and returns its URL. The database is
// dropped at the end of the test.
func New(t testing.TB) string {
	t.Helper()
	dbURL := NewEmpty(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := migrations.Up(ctx, dbURL); err != nil {
		t.Fatalf("dbtest: migrate %s: %v", redact(dbURL), err)
	}
	return dbURL
}

// NewEmpty creates an empty database (for a server that keeps its own tables in it, such
// as FerretDB) and returns its URL. The database is dropped at the end of the test.
func NewEmpty(t testing.TB) string {
	t.Helper()
	admin := os.Getenv("TEST_DATABASE_URL")
	if admin == "" {
		admin = DefaultAdminURL
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("dbtest: connect to %s: %v", redact(admin), err)
	}
	defer conn.Close(context.Background())

	b := make([]byte, 8)
	_, _ = rand.Read(b)
	name := "test_" + hex.EncodeToString(b)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("dbtest: create database: %v", err)
	}
	Drop(t, admin, name)

	u, err := url.Parse(admin)
	if err != nil {
		t.Fatalf("dbtest: parse %s: %v", redact(admin), err)
	}
	u.Path = "/" + name
	return u.String()
}

// Drop drops the named databases of adminURL's server (with FORCE, when they exist)
// once the test has ended, and reports a failure to drop as a test error. Cleanups
// registered after it run before it, so they may still use the databases.
func Drop(t testing.TB, adminURL string, names ...string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, adminURL)
		if err != nil {
			t.Errorf("dbtest: connect to drop %v: %v", names, err)
			return
		}
		defer conn.Close(context.WithoutCancel(ctx))
		for _, name := range names {
			if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
				t.Errorf("dbtest: drop %s: %v", name, err)
			}
		}
	})
}

// NewPool is New plus a pool on the database, closed at the end of the test.
func NewPool(t testing.TB) (*pgxpool.Pool, string) {
	t.Helper()
	dbURL := New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatalf("dbtest: pool: %v", err)
	}
	// Registered after the drop, so it runs before it.
	t.Cleanup(pool.Close)
	return pool, dbURL
}

// redact hides the password of a URL. (shared/redact does the same, but this module
// stays below shared in the dependency order.)
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable url)"
	}
	return u.Redacted()
}
