package ferret

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultTestAdminURL is the PostgreSQL server tests use when TEST_DATABASE_URL is unset.
const DefaultTestAdminURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// StartTest starts a FerretDB of the test's own on a free port, backed by a fresh
// PostgreSQL database; both go away when the test ends. A missing PostgreSQL server
// fails the test: it never skips.
func StartTest(t testing.TB) *Server {
	t.Helper()
	admin := os.Getenv("TEST_DATABASE_URL")
	if admin == "" {
		admin = DefaultTestAdminURL
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("ferret: connect to %s: %v", redact(admin), err)
	}
	defer conn.Close(context.Background())
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	name := "ferret_" + hex.EncodeToString(b)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("ferret: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Errorf("ferret: connect to drop %s: %v", name, err)
			return
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("ferret: drop %s: %v", name, err)
		}
	})
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatalf("ferret: parse %s: %v", redact(admin), err)
	}
	u.Path = "/" + name
	// FerretDB's own logs stay off: it logs every duplicate-key answer, which the
	// version-guarded upserts of the read model expect, as an error.
	srv, err := Start(context.Background(), Config{Addr: "127.0.0.1:0", PostgreSQLURL: u.String()})
	if err != nil {
		t.Fatalf("ferret: %v", err)
	}
	// Registered after the drop, so it runs before it.
	t.Cleanup(func() { _ = srv.Stop() })
	return srv
}

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable url)"
	}
	return u.Redacted()
}
