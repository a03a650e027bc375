package app_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

// TestHealthSyncRunsOnItsOwnPool runs the API as main does and asks /health/sync: its
// outbox statistics must run on the pool of their own (application_name api-sync),
// never on the write pool (api), so that the public route cannot take connections from
// writes. The read side is unreachable here; the outbox part answers regardless.
func TestHealthSyncRunsOnItsOwnPool(t *testing.T) {
	t.Parallel()
	dbURL := dbtest.New(t)
	logs, done := startWithReadSideDown(t, map[string]string{"DATABASE_URL": dbURL})
	base := "http://" + listeningAddr(t, logs, done)

	rctx := sharedtest.Context(t, 20*time.Second)
	status, body := sharedtest.Request(t, rctx, "GET", base+"/health/sync", nil, nil)
	if status != http.StatusServiceUnavailable {
		t.Fatalf("health/sync with the read side down: %d %s", status, body)
	}

	conn, err := pgx.Connect(rctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	// An idle backend shows the last statement it ran.
	rows, err := conn.Query(rctx, `
SELECT application_name FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE '%FROM outbox%WHERE published_at IS NULL%'`)
	if err != nil {
		t.Fatal(err)
	}
	apps, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(apps) == 0 {
		t.Fatalf("no backend ran the outbox statistics (body %s)", body)
	}
	for _, app := range apps {
		if app != "api-sync" {
			t.Fatalf("the outbox statistics ran on %q connections %v, want only api-sync", app, apps)
		}
	}
}
