// Command publisher relays the outbox into JetStream (see internal/relay).
//
//	publisher                                   run the relay (configured by environment)
//	publisher list-parked [-limit N]            print parked rows as JSON lines
//	publisher retry-parked [-event-id ID ...]   unpark the given rows, or all parked rows
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/outboxtodo/outboxtodo/services/publisher/internal/config"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/outboxdb"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/service"
	"github.com/outboxtodo/outboxtodo/shared/postgres"
	"github.com/outboxtodo/outboxtodo/shared/process"
	"github.com/outboxtodo/outboxtodo/shared/telemetry"
)

func main() {
	cmd := ""
	if len(os.Args) > 1 {
		cmd = os.Args[1]
	}
	switch cmd {
	case "":
		process.Main("publisher", run)
	case "list-parked", "retry-parked":
		process.Main("publisher", func(ctx context.Context, log *slog.Logger) error {
			return operate(ctx, cmd, os.Args[2:], log)
		})
	default:
		fmt.Fprintf(os.Stderr, "publisher: unknown command %q (want none, list-parked or retry-parked)\n", cmd)
		os.Exit(2)
	}
}

func run(ctx context.Context, log *slog.Logger) error {
	return runWith(ctx, log, nil)
}

// runWith runs the relay configured from environ (the process environment when nil).
func runWith(ctx context.Context, log *slog.Logger, environ map[string]string) (err error) {
	cfg, err := config.FromMap(environ)
	if err != nil {
		return err
	}
	tracing, err := telemetry.FromEnv(ctx, "publisher", log)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		err = errors.Join(err, tracing.Shutdown(sctx))
	}()
	return service.Run(ctx, cfg, log, tracing.Provider)
}

// eventIDs collects repeated -event-id flags.
type eventIDs []uuid.UUID

func (e *eventIDs) String() string { return fmt.Sprint([]uuid.UUID(*e)) }

func (e *eventIDs) Set(s string) error {
	for _, part := range strings.Split(s, ",") {
		id, err := uuid.Parse(strings.TrimSpace(part))
		if err != nil {
			return fmt.Errorf("event id %q: %w", part, err)
		}
		*e = append(*e, id)
	}
	return nil
}

func operate(ctx context.Context, cmd string, args []string, log *slog.Logger) error {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	var ids eventIDs
	limit := 100
	if cmd == "retry-parked" {
		fs.Var(&ids, "event-id", "event id to unpark (repeatable or comma-separated); none unparks every parked row")
	} else {
		fs.IntVar(&limit, "limit", limit, "most rows to print")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return errors.New("unexpected arguments: " + strings.Join(fs.Args(), " "))
	}
	cfg, err := config.Load()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	pool, err := postgres.Connect(ctx, cfg.DatabaseURL, postgres.PoolConfig{MaxConns: 2, AppName: "publisher-" + cmd})
	if err != nil {
		return err
	}
	defer pool.Close()

	if cmd == "retry-parked" {
		n, err := outboxdb.RetryParked(ctx, pool, ids)
		if err != nil {
			return err
		}
		log.Info("unparked outbox rows", "rows", n, "requested", len(ids))
		return nil
	}
	rows, err := outboxdb.ListParked(ctx, pool, limit)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(os.Stdout)
	for _, r := range rows {
		if err := enc.Encode(r); err != nil {
			return fmt.Errorf("write: %w", err)
		}
	}
	return nil
}
