// Package migrations holds the SQL schema shared by the services and applies it with
// goose. The same code runs from tests, from `make run` and from the Kubernetes
// migration Job (cmd/migrate).
//
// Every migration must run unchanged on PostgreSQL and on CockroachDB, so goose runs
// without its advisory-lock session locker (CockroachDB has none): run one migrator at
// a time, as the Kubernetes Job does. The exception is a migration only CockroachDB
// needs: it is written in Go, checks the server and does nothing on PostgreSQL (its
// version is still recorded), like 00008_cockroach_hash_sharded.go.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
)

//go:embed *.sql
var files embed.FS

// Result is one migration applied by Up.
type Result struct {
	Version int64
	Source  string
}

// Up applies every pending migration to the database at databaseURL and returns the
// ones it applied (none when the schema is current).
func Up(ctx context.Context, databaseURL string) ([]Result, error) {
	p, db, err := provider(databaseURL)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	res, err := p.Up(ctx)
	if err != nil {
		return nil, fmt.Errorf("apply migrations: %w", err)
	}
	out := make([]Result, 0, len(res))
	for _, r := range res {
		out = append(out, Result{Version: r.Source.Version, Source: r.Source.Path})
	}
	return out, nil
}

// Version returns the schema version of the database and the newest one this build
// knows.
func Version(ctx context.Context, databaseURL string) (current, latest int64, err error) {
	p, db, err := provider(databaseURL)
	if err != nil {
		return 0, 0, err
	}
	defer db.Close()
	current, latest, err = p.GetVersions(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("read schema version: %w", err)
	}
	return current, latest, nil
}

func provider(databaseURL string) (*goose.Provider, *sql.DB, error) {
	cfg, err := pgx.ParseConfig(databaseURL)
	if err != nil {
		return nil, nil, fmt.Errorf("parse database url: %w", err)
	}
	db := stdlib.OpenDB(*cfg)
	p, err := goose.NewProvider(goose.DialectPostgres, db, files, goose.WithGoMigrations(cockroachHashSharded))
	if err != nil {
		_ = db.Close()
		return nil, nil, fmt.Errorf("load migrations: %w", err)
	}
	return p, db, nil
}
