// Package operate holds the projector's operator commands on the read model: deadletters
// lists dead letters or applies them again, rebuild fills a fresh read model from the
// stream and switches the readers to it; help prints the usage of every projector
// command. They read the projector's configuration from the environment (package
// config) and connect as a replica does (package app); flags only select what a command
// acts on.
package operate

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/app"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/config"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/deadletter"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/project"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/rebuild"
	"github.com/outboxtodo/outboxtodo/shared/mongoconn"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
)

const usage = `usage: projector [command] [flags]

commands:
  run                                   consume the stream into the read model (default)
  deadletters list [--all]              list pending dead letters (--all: redriven too)
  deadletters redrive [--id ID]...      apply dead letters to the read model again (none: all pending)
  rebuild [--database NAME] [--settle D] [--timeout D] [--batch-size N]
                                        fill a fresh read model from the stream, then switch readers

configuration comes from the environment (NATS_URL, MONGODB_URI, ...). verify, resync
and restore-cutover are the write side's: todoctl, in the API module.
`

// Run runs the operator command cmd (deadletters, rebuild or help) with its arguments
// args, printing results to out.
func Run(ctx context.Context, cmd string, args []string, out io.Writer, log *slog.Logger) error {
	if cmd == "help" {
		_, err := io.WriteString(out, usage)
		return err
	}
	cfg, err := config.Load()
	if err != nil {
		return err
	}
	switch cmd {
	case "deadletters":
		return deadLetters(ctx, cfg, args, out)
	case "rebuild":
		return runRebuild(ctx, cfg, log, args, out)
	}
	return fmt.Errorf("unknown command %q\n%s", cmd, usage)
}

// deadLetters runs deadletters list, which prints the dead letters, or deadletters
// redrive, which applies them to the active read model again.
func deadLetters(ctx context.Context, cfg config.Config, args []string, out io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("deadletters: want list or redrive\n%s", usage)
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("deadletters "+sub, flag.ContinueOnError)
	all := fs.Bool("all", false, "list redriven dead letters too")
	var ids []string
	fs.Func("id", "dead letter id to redrive (repeatable; none: all pending)", func(id string) error {
		ids = append(ids, id)
		return nil
	})
	store, disconnect, err := parseAndConnect(ctx, cfg, fs, args)
	if err != nil {
		return err
	}
	defer disconnect()
	dead := deadletter.New(store.Control())
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	switch sub {
	case "list":
		dls, err := dead.List(ctx, *all)
		if err != nil {
			return err
		}
		for _, dl := range dls {
			state := "pending"
			if dl.RedrivenAt != nil {
				state = "redriven " + dl.RedrivenAt.Format(time.RFC3339)
			}
			fmt.Fprintf(out, "%s\t%s\t%s\tdeliveries=%d\t%s\t%s\n\t%s\n", dl.ID, dl.DeadAt.Format(time.RFC3339), dl.Subject,
				dl.Deliveries, state, dl.Error, truncate(string(dl.Data), 300))
		}
		fmt.Fprintf(out, "%d dead letters\n", len(dls))
		return nil
	case "redrive":
		active, err := store.Active(ctx)
		if err != nil {
			return err
		}
		outcomes, err := dead.Redrive(ctx, project.New(active, 1).ApplyRaw, ids)
		failed := 0
		for _, o := range outcomes {
			if o.Err != nil {
				failed++
				fmt.Fprintf(out, "failed   %s: %v\n", o.ID, o.Err)
				continue
			}
			fmt.Fprintf(out, "redriven %s\n", o.ID)
		}
		if err != nil {
			return err
		}
		if failed > 0 {
			return fmt.Errorf("%d of %d dead letters failed again and stay pending", failed, len(outcomes))
		}
		return nil
	}
	return fmt.Errorf("deadletters: unknown subcommand %q", sub)
}

// parseAndConnect parses a command's flags from args, then connects to MongoDB as a
// replica does and returns the read model; disconnect ends the connection.
func parseAndConnect(ctx context.Context, cfg config.Config, fs *flag.FlagSet, args []string) (_ *readmodel.Store, disconnect func(), _ error) {
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	client, err := app.ConnectMongo(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	return readmodel.NewStore(client, cfg.MongoDatabase), func() { _ = mongoconn.Disconnect(ctx, client) }, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// runRebuild fills a fresh read model from the stream and switches the readers to it.
func runRebuild(ctx context.Context, cfg config.Config, log *slog.Logger, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("rebuild", flag.ContinueOnError)
	name := fs.String("database", cfg.MongoDatabase+"_"+time.Now().UTC().Format("20060102150405"), "fresh database to fill")
	settle := fs.Duration("settle", cfg.FetchWait+cfg.MongoTimeout+time.Second, "time live projectors may keep using the old pointer")
	timeout := fs.Duration("timeout", time.Hour, "bound on the whole rebuild")
	batch := fs.Int("batch-size", rebuild.DefaultBatchSize, "messages per fetch of the rebuild consumer")
	store, disconnect, err := parseAndConnect(ctx, cfg, fs, args)
	if err != nil {
		return err
	}
	defer disconnect()
	nc, js, err := app.ConnectNATS(cfg, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	if *batch < 1 {
		return fmt.Errorf("rebuild: --batch-size %d: want at least 1", *batch)
	}
	res, err := rebuild.Run(ctx, rebuild.Config{Consumer: app.ConsumerConfig(cfg), BatchSize: *batch, Database: *name, Settle: *settle, Timeout: *timeout,
		FerretDBPostgreSQLURL: cfg.FerretDBPostgreSQLURL}, js, store, log)
	if err != nil {
		return err
	}
	previous := res.Previous + " (drop it when no longer needed)"
	if res.Previous == store.Control().Name() {
		// Dropping it would take the pointer just written, and the readers back to it.
		previous = fmt.Sprintf("%s, the control database (keep it: it holds the pointer and the dead letters; drop only its %s, %s, %s and %s collections when no longer needed)",
			res.Previous, readmodel.CollUsers, readmodel.CollTodos, readmodel.CollStats, readmodel.CollProjection)
	}
	fmt.Fprintf(out, "rebuilt %s from the newest message of each aggregate (%d messages, stream sequence %d) in %s (%.0f messages/s); readers switched from %s\n",
		res.Database, res.Messages, res.Events, res.CatchUp.Round(time.Millisecond), res.MessagesPerSecond, previous)
	return nil
}
