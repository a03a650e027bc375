package ferret

import (
	"context"
	"testing"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
)

// StartTest starts a FerretDB of the test's own on a free port, backed by a fresh
// PostgreSQL database (see dbtest.NewEmpty) with synchronous_commit off (a test's data
// need not survive a crash of the PostgreSQL server); both go away when the test ends.
// A missing PostgreSQL server fails the test: it never skips. The read model's GIN
// indexes are the caller's: they need the collections, which the test creates (see
// Server.PostgreSQLURL).
func StartTest(t testing.TB) *Server {
	t.Helper()
	dbURL := dbtest.NewEmpty(t)
	// FerretDB's own logs stay off: it logs every duplicate-key answer, which the
	// version-guarded upserts of the read model expect, as an error.
	srv, err := Start(context.Background(), Config{Addr: "127.0.0.1:0", PostgreSQLURL: dbURL, SynchronousCommitOff: true})
	if err != nil {
		t.Fatalf("ferret: %v", err)
	}
	// Registered after the drop, so it runs before it.
	t.Cleanup(func() { _ = srv.Stop() })
	return srv
}
