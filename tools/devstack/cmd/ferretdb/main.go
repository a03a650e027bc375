// Command ferretdb runs the embedded FerretDB of the local stack on its own: the
// MongoDB wire protocol on FERRETDB_ADDR, stored in the PostgreSQL database at
// FERRETDB_POSTGRESQL_URL, which it creates when missing. Like the stack's, it is for
// development: that database gets synchronous_commit off (see ferret.Config), and a
// projector given the same FERRETDB_POSTGRESQL_URL creates the read model's indexes.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"

	"github.com/outboxtodo/outboxtodo/shared/process"
	"github.com/outboxtodo/outboxtodo/tools/devstack/ferret"
	"github.com/outboxtodo/outboxtodo/tools/devstack/pgadmin"
)

func main() {
	process.Main("ferretdb", run)
}

func run(ctx context.Context, log *slog.Logger) error {
	fs := flag.NewFlagSet("ferretdb", flag.ContinueOnError)
	addr := fs.String("listen-addr", envOr("FERRETDB_ADDR", "127.0.0.1:27017"), "MongoDB wire protocol listen address (FERRETDB_ADDR)")
	pgURL := fs.String("postgresql-url", envOr("FERRETDB_POSTGRESQL_URL", "postgres://postgres@127.0.0.1:5432/ferretdb?sslmode=disable"),
		"PostgreSQL database that stores FerretDB's data; created when missing (FERRETDB_POSTGRESQL_URL)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	u, err := url.Parse(*pgURL)
	if err != nil || strings.Trim(u.Path, "/") == "" {
		return fmt.Errorf("postgresql url must name a database: %q", *pgURL)
	}
	log.Info("config", "listen_addr", *addr, "postgresql_url", u.Redacted())
	if err := pgadmin.EnsureDatabase(ctx, u.String()); err != nil {
		return err
	}
	quiet := slog.New(ferret.LogHandler(log.Handler().WithAttrs([]slog.Attr{slog.String("component", "ferretdb")})))
	srv, err := ferret.Start(ctx, ferret.Config{Addr: *addr, PostgreSQLURL: u.String(), Logger: quiet, SynchronousCommitOff: true})
	if err != nil {
		return err
	}
	log.Info("ferretdb listening", "uri", srv.URI())
	<-ctx.Done()
	return srv.Stop()
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
