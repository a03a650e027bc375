package pgadmin_test

import (
	"crypto/rand"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
	"github.com/outboxtodo/outboxtodo/tools/devstack/pgadmin"
)

func TestEnsureDatabaseCreatesOnceAndKeeps(t *testing.T) {
	t.Parallel()
	ctx := sharedtest.Context(t, 30*time.Second)
	name := "pgadmin_" + strings.ToLower(rand.Text()[:10])
	url := fmt.Sprintf("postgres://postgres@127.0.0.1:5432/%s?sslmode=disable", name)
	dbtest.Drop(t, dbtest.DefaultAdminURL, name)
	for range 2 { // the second call finds it and does nothing
		if err := pgadmin.EnsureDatabase(ctx, url); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect to the ensured database: %v", err)
	}
	conn.Close(ctx)
	if err := pgadmin.EnsureDatabase(ctx, "postgres://postgres@127.0.0.1:5432/?sslmode=disable"); err == nil {
		t.Fatal("a url without a database was accepted")
	}
}
