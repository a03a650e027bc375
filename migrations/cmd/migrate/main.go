// Command migrate applies the schema to the database named by DATABASE_URL.
//
//	migrate          apply pending migrations (the default)
//	migrate up       the same
//	migrate status   print the current and the latest schema version
//	migrate wait     block until the schema is at least at the latest version this
//	                 build knows (the Kubernetes init container of the services)
//
// It is what `make migrate`, `make run`, the tests and the Kubernetes migration Job run.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/outboxtodo/outboxtodo/migrations"
)

const defaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/todo?sslmode=disable"

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("service", "migrate")
	if err := run(log, os.Args[1:]); err != nil {
		log.Error("migrate failed", "error", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger, args []string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()

	url := os.Getenv("DATABASE_URL")
	if url == "" {
		url = defaultDatabaseURL
	}
	cmd := "up"
	if len(args) > 0 {
		cmd = args[0]
	}
	switch cmd {
	case "up":
		applied, err := migrations.Up(ctx, url)
		if err != nil {
			return err
		}
		for _, r := range applied {
			log.Info("applied migration", "version", r.Version, "source", r.Source)
		}
		_, latest, err := migrations.Version(ctx, url)
		if err != nil {
			return err
		}
		log.Info("schema is current", "version", latest, "applied", len(applied))
		return nil
	case "status":
		current, latest, err := migrations.Version(ctx, url)
		if err != nil {
			return err
		}
		fmt.Printf("current %d\nlatest %d\n", current, latest)
		return nil
	case "wait":
		return waitForSchema(ctx, log, url, waitPoll)
	default:
		return errors.New("usage: migrate [up|status|wait]")
	}
}

// waitPoll is how often `migrate wait` reads the schema version.
const waitPoll = 2 * time.Second

// waitForSchema returns once the database's schema version is at least the latest one
// this build knows, reading it every poll until ctx ends. A database ahead of this build
// passes, so that a rollback to an older image is not blocked. Read errors are retried:
// the database or the migration Job may still be starting.
func waitForSchema(ctx context.Context, log *slog.Logger, url string, poll time.Duration) error {
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		readCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		current, latest, err := migrations.Version(readCtx, url)
		cancel()
		switch {
		case err != nil:
			log.Warn("read schema version", "error", err)
		case current >= latest:
			log.Info("schema is current", "version", current, "latest", latest)
			return nil
		default:
			log.Info("waiting for migrations", "version", current, "latest", latest)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for the schema: %w", ctx.Err())
		case <-t.C:
		}
	}
}
