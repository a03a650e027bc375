// Package todoctl is the command line of the write side's operator tools: verify,
// resync and restore-cutover, which read the API's tables and re-emit events through
// its outbox (packages verify, resync and restore). They read the read model and, for
// the cut-over, replace the stream; the projector keeps the tools of the read side
// (dead letters, rebuild). Every command reads the same environment configuration
// (Config); flags only select what a tool acts on.
package todoctl

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
	"github.com/nats-io/nats.go/jetstream"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"

	"github.com/outboxtodo/outboxtodo/services/api/internal/postgres"
	"github.com/outboxtodo/outboxtodo/services/api/internal/restore"
	"github.com/outboxtodo/outboxtodo/services/api/internal/resync"
	"github.com/outboxtodo/outboxtodo/services/api/internal/verify"
	"github.com/outboxtodo/outboxtodo/shared/mongoconn"
	"github.com/outboxtodo/outboxtodo/shared/natsconn"
	sharedpg "github.com/outboxtodo/outboxtodo/shared/postgres"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
)

const usage = `usage: todoctl command [flags]

commands:
  verify                                compare PostgreSQL and MongoDB; exit 1 on drift
  resync (--all | --user ID | --todo ID)...
                                        re-emit outbox events so the read model is repaired
  restore-cutover [--yes]               after a restore of the database: replace the stream and the
                                        read model, re-emit every aggregate (publishers and projectors
                                        stopped; without --yes, only show what runs)

configuration comes from the environment (DATABASE_URL, NATS_URL, MONGODB_URI, ...).
`

// ErrDrift is returned by verify when the databases differ.
var ErrDrift = errors.New("read model differs from the source of truth")

// Run runs the command named by args[0], printing results to out. The NATS client
// logs its disconnections to log.
func Run(ctx context.Context, args []string, out io.Writer, log *slog.Logger) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return fmt.Errorf("no command\n%s", usage)
	}
	cmd, args := args[0], args[1:]
	if cmd == "help" {
		_, err := io.WriteString(out, usage)
		return err
	}
	cfg, err := LoadConfig()
	if err != nil {
		return err
	}
	switch cmd {
	case "verify":
		return runVerify(ctx, cfg, out)
	case "resync":
		return runResync(ctx, cfg, args, out)
	case "restore-cutover":
		return runRestoreCutover(ctx, cfg, args, out, log)
	}
	return fmt.Errorf("unknown command %q\n%s", cmd, usage)
}

func runVerify(ctx context.Context, cfg Config, out io.Writer) error {
	return withReadModel(ctx, cfg, 10*time.Minute, func(ctx context.Context, c *conns, db *mongo.Database) error {
		diffs, err := verify.Run(ctx, c.store, db)
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
	})
}

func runResync(ctx context.Context, cfg Config, args []string, out io.Writer) error {
	sel, err := parseSelection(args)
	if err != nil {
		return err
	}
	return withReadModel(ctx, cfg, 30*time.Minute, func(ctx context.Context, c *conns, db *mongo.Database) error {
		rep, err := resync.Run(ctx, c.store, db, sel)
		fmt.Fprintf(out, "re-emitted %d, tombstones %d, skipped %d still unpublished\n", rep.Emitted, rep.Tombstones, rep.Pending)
		return err
	})
}

// withReadModel connects, then runs fn within timeout on the active read-model
// database.
func withReadModel(ctx context.Context, cfg Config, timeout time.Duration, fn func(context.Context, *conns, *mongo.Database) error) error {
	c, err := connect(ctx, cfg)
	if err != nil {
		return err
	}
	defer c.close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	db, err := c.readModel.Active(ctx)
	if err != nil {
		return err
	}
	return fn(ctx, c, db)
}

// parseSelection reads resync's flags.
func parseSelection(args []string) (resync.Selection, error) {
	fs := flag.NewFlagSet("resync", flag.ContinueOnError)
	all := fs.Bool("all", false, "every aggregate, plus tombstones for read-model documents the source lacks")
	var users, todos multiFlag
	fs.Var(&users, "user", "user id (repeatable)")
	fs.Var(&todos, "todo", "todo id (repeatable)")
	if err := fs.Parse(args); err != nil {
		return resync.Selection{}, err
	}
	sel := resync.Selection{All: *all}
	for _, s := range users {
		id, err := uuid.Parse(s)
		if err != nil {
			return sel, fmt.Errorf("--user %q: %w", s, err)
		}
		sel.Users = append(sel.Users, id)
	}
	for _, s := range todos {
		id, err := uuid.Parse(s)
		if err != nil {
			return sel, fmt.Errorf("--todo %q: %w", s, err)
		}
		sel.Todos = append(sel.Todos, id)
	}
	if !sel.All && len(sel.Users)+len(sel.Todos) == 0 {
		return sel, errors.New("resync: name aggregates with --user/--todo, or pass --all")
	}
	return sel, nil
}

func runRestoreCutover(ctx context.Context, cfg Config, args []string, out io.Writer, log *slog.Logger) error {
	fs := flag.NewFlagSet("restore-cutover", flag.ContinueOnError)
	yes := fs.Bool("yes", false, "delete the stream, drop the read model and re-emit every aggregate")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := connect(ctx, cfg)
	if err != nil {
		return err
	}
	defer c.close()
	nc, err := natsconn.Connect(cfg.NATSURL, cfg.NATS, "todoctl", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	rc := restore.Config{Stream: cfg.Stream, MembersBucket: cfg.MembersBucket}
	if !*yes {
		return showCutover(ctx, rc, c.store, js, c.readModel, out)
	}
	rep, err := restore.Run(ctx, rc, c.store, js, c.readModel)
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

// showCutover is restore-cutover without --yes: it lists what runs and what the
// cut-over would replace, and changes nothing.
func showCutover(ctx context.Context, rc restore.Config, store *postgres.Store, js jetstream.JetStream, readModel *readmodel.Store, out io.Writer) error {
	live, err := restore.Live(ctx, rc, store, js)
	if err != nil {
		return err
	}
	for _, l := range live {
		fmt.Fprintf(out, "running: %s\n", l)
	}
	// The active database, not the control one: after a rebuild they differ, and the
	// operator must know which one goes.
	active, err := readModel.ActiveName(ctx)
	if err != nil {
		return err
	}
	return fmt.Errorf("restore-cutover: nothing done; with --yes it deletes and recreates stream %s, deletes the dead letters, drops read model %s (the active one), and re-emits every aggregate through the outbox",
		rc.Stream, active)
}

// conns are what every tool reads: the API's store on the source of truth and the
// read model.
type conns struct {
	store     *postgres.Store
	readModel *readmodel.Store
	close     func()
}

// connect opens both. The tools' writes never notify: the publisher finds their rows
// by polling.
func connect(ctx context.Context, cfg Config) (*conns, error) {
	pool, err := sharedpg.Connect(ctx, cfg.DatabaseURL, sharedpg.PoolConfig{AppName: "todoctl", StatementTimeout: 5 * time.Minute})
	if err != nil {
		return nil, err
	}
	// The cut-over's writes are majority-acknowledged and journaled, as the
	// projector's are by default.
	journal := true
	client, err := mongoconn.Connect(ctx, cfg.MongoURI, mongoconn.Options{AppName: "todoctl", Timeout: cfg.MongoTimeout,
		WriteConcern: &writeconcern.WriteConcern{W: writeconcern.WCMajority, Journal: &journal}, Ping: true})
	if err != nil {
		pool.Close()
		return nil, err
	}
	return &conns{
		store:     postgres.New(pool, false),
		readModel: readmodel.NewStore(client, cfg.MongoDatabase),
		close:     func() { _ = mongoconn.Disconnect(ctx, client); pool.Close() },
	}, nil
}

// multiFlag collects a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
