// Package commands holds the projector's operator commands that work on PostgreSQL, the
// source of truth, besides the stream and the read model: verify, resync and
// restore-cutover. They read the projector's configuration from the environment
// (package config, DATABASE_URL among it) and connect to MongoDB and NATS as a replica
// does (package app); flags only select what a command acts on.
package commands

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/app"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/config"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/restore"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/resync"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/verify"
	"github.com/outboxtodo/outboxtodo/shared/mongoconn"
	"github.com/outboxtodo/outboxtodo/shared/postgres"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
)

// ErrDrift is returned by verify when the databases differ.
var ErrDrift = errors.New("read model differs from the source of truth")

// Run runs the command cmd (verify, resync or restore-cutover) with its flags args,
// printing results to out.
func Run(ctx context.Context, cmd string, args []string, out io.Writer, log *slog.Logger) error {
	cfg, err := config.Load()
	if err != nil {
		return err
	}
	switch cmd {
	case "verify":
		return runVerify(ctx, cfg, out)
	case "resync":
		return runResync(ctx, cfg, args, out)
	case "restore-cutover":
		return runRestoreCutover(ctx, cfg, log, args, out)
	}
	return fmt.Errorf("unknown command %q", cmd)
}

func connectPostgres(ctx context.Context, cfg config.Config) (*pgxpool.Pool, error) {
	return postgres.Connect(ctx, cfg.DatabaseURL, postgres.PoolConfig{AppName: "projector-tools", StatementTimeout: 5 * time.Minute})
}

func runVerify(ctx context.Context, cfg config.Config, out io.Writer) error {
	pool, err := connectPostgres(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	client, err := app.ConnectMongo(ctx, cfg)
	if err != nil {
		return err
	}
	defer mongoconn.Disconnect(ctx, client)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	db, err := readmodel.NewStore(client, cfg.MongoDatabase).Active(ctx)
	if err != nil {
		return err
	}
	diffs, err := verify.Run(ctx, pool, db)
	if err != nil {
		return err
	}
	for _, d := range diffs {
		fmt.Fprintln(out, d)
	}
	if len(diffs) > 0 {
		fmt.Fprintf(out, "%d differences between PostgreSQL and %s\n", len(diffs), db.Name())
		return fmt.Errorf("%w: %d differences", ErrDrift, len(diffs))
	}
	fmt.Fprintf(out, "PostgreSQL and %s are equal\n", db.Name())
	return nil
}

func runResync(ctx context.Context, cfg config.Config, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("resync", flag.ContinueOnError)
	all := fs.Bool("all", false, "every aggregate, plus tombstones for read-model documents the source lacks")
	var users, todos multiFlag
	fs.Var(&users, "user", "user id (repeatable)")
	fs.Var(&todos, "todo", "todo id (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	sel := resync.Selection{All: *all}
	for _, s := range users {
		id, err := uuid.Parse(s)
		if err != nil {
			return fmt.Errorf("--user %q: %w", s, err)
		}
		sel.Users = append(sel.Users, id)
	}
	for _, s := range todos {
		id, err := uuid.Parse(s)
		if err != nil {
			return fmt.Errorf("--todo %q: %w", s, err)
		}
		sel.Todos = append(sel.Todos, id)
	}
	if !sel.All && len(sel.Users)+len(sel.Todos) == 0 {
		return errors.New("resync: name aggregates with --user/--todo, or pass --all")
	}
	pool, err := connectPostgres(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	client, err := app.ConnectMongo(ctx, cfg)
	if err != nil {
		return err
	}
	defer mongoconn.Disconnect(ctx, client)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	db, err := readmodel.NewStore(client, cfg.MongoDatabase).Active(ctx)
	if err != nil {
		return err
	}
	rep, err := resync.Run(ctx, pool, pool, db, sel)
	fmt.Fprintf(out, "re-emitted %d, tombstones %d, skipped %d still unpublished\n", rep.Emitted, rep.Tombstones, rep.Pending)
	return err
}

func runRestoreCutover(ctx context.Context, cfg config.Config, log *slog.Logger, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("restore-cutover", flag.ContinueOnError)
	yes := fs.Bool("yes", false, "delete the stream, drop the read model and re-emit every aggregate")
	if err := fs.Parse(args); err != nil {
		return err
	}
	pool, err := connectPostgres(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	client, err := app.ConnectMongo(ctx, cfg)
	if err != nil {
		return err
	}
	defer mongoconn.Disconnect(ctx, client)
	nc, js, err := app.ConnectNATS(cfg, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	rc := restore.Config{Stream: cfg.Stream, MembersBucket: cfg.MembersBucket}
	store := readmodel.NewStore(client, cfg.MongoDatabase)
	if !*yes {
		live, err := restore.Live(ctx, rc, pool, js)
		if err != nil {
			return err
		}
		for _, l := range live {
			fmt.Fprintf(out, "running: %s\n", l)
		}
		// The active database, not the control one: after a rebuild they differ, and the
		// operator must know which one goes.
		active, err := store.ActiveName(ctx)
		if err != nil {
			return err
		}
		return fmt.Errorf("restore-cutover: nothing done; with --yes it deletes and recreates stream %s, deletes the dead letters, drops read model %s (the active one), and re-emits every aggregate through the outbox",
			cfg.Stream, active)
	}
	rep, err := restore.Run(ctx, rc, pool, pool, js, store)
	if rep.StreamAbsent {
		fmt.Fprintf(out, "stream %s was absent: the publisher creates it at start\n", cfg.Stream)
	} else if rep.Database != "" {
		fmt.Fprintf(out, "stream %s recreated empty (%d messages dropped)\n", cfg.Stream, rep.StreamMessages)
	}
	if rep.Database != "" {
		fmt.Fprintf(out, "read model %s dropped, %d dead letters deleted\n", rep.Database, rep.DeadLetters)
	}
	fmt.Fprintf(out, "re-emitted %d, skipped %d still unpublished, %d tombstones of deleted users\n", rep.Resync.Emitted, rep.Resync.Pending, rep.DeletedUsers)
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "now start the publishers and the projectors")
	return nil
}

// multiFlag collects a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
