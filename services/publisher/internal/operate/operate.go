// Package operate holds the publisher's operator commands on parked outbox rows:
// list-parked prints them as JSON lines, retry-parked unparks the given rows or all of
// them. They read the publisher's configuration (DATABASE_URL) from the environment.
package operate

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/outboxtodo/outboxtodo/services/publisher/internal/config"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/outboxdb"
	"github.com/outboxtodo/outboxtodo/shared/postgres"
)

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

// Run runs the operator command cmd (list-parked or retry-parked) with its flags args
// against the database of the publisher's configuration, printing rows to out. It
// gives up after a minute.
func Run(ctx context.Context, cmd string, args []string, out io.Writer, log *slog.Logger) error {
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
	enc := json.NewEncoder(out)
	for _, r := range rows {
		if err := enc.Encode(r); err != nil {
			return fmt.Errorf("write: %w", err)
		}
	}
	return nil
}
