// Command projload measures the read side against a running projector.
//
// Raw ceilings (-inserts, -upserts): what the MongoDB server itself does with the
// projector's own kinds of write, on the active read model's todos collection; see
// package ceilings, which `make bench` runs in-process.
//
// Drain or steady rate (-count with -rate 0, or -rate and -duration): it publishes
// todo.created events straight into the stream (as the publisher would, occurred_at =
// publish time, each with its owner's stats snapshot), waits until the projector has
// written them all, and reports the sync lag per event (projected_at minus occurred_at,
// read back from the documents) as p50/p95/p99 and the rate through the projector.
// -rate 0 -count 0 publishes nothing.
//
// It measures the projector's part of the pipeline (stream to MongoDB); the API and
// the publisher add their own latency before an event reaches the stream. With -json it
// prints one JSON document (see output) instead of text.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/process"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/ceilings"
	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/report"
)

func main() {
	process.Main("projload", run)
}

// output is everything one run measured; -json prints it. The ceilings' fields are
// report.Ceilings' (collection, collection_docs before the ceilings, ceilings).
type output struct {
	report.Ceilings
	Drain *drain `json:"drain,omitempty"`
}

type settings struct {
	natsURL, mongoURI, control, prefix, stream string
	rate, count, users                         int
	duration, wait                             time.Duration
	ceilings                                   ceilings.Settings
	json                                       bool
}

func run(ctx context.Context, log *slog.Logger) error {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		return err
	}
	client, err := mongo.Connect(options.Client().ApplyURI(o.mongoURI).SetServerSelectionTimeout(10 * time.Second).
		SetMaxPoolSize(uint64(o.ceilings.Concurrency) + 4))
	if err != nil {
		return fmt.Errorf("mongodb client: %w", err)
	}
	defer func() { _ = client.Disconnect(context.WithoutCancel(ctx)) }()
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	db, err := readmodel.NewStore(client, o.control).Active(actx)
	cancel()
	if err != nil {
		return err
	}
	todos := db.Collection(readmodel.CollTodos)

	var out output
	if out.Ceilings, err = ceilings.Run(ctx, todos, o.ceilings); err != nil {
		return err
	}
	if o.rate > 0 || o.count > 0 {
		if out.Drain, err = publishAndWait(ctx, log, o, todos); err != nil {
			return err
		}
	}
	return out.print(os.Stdout, o.json)
}

func parseFlags(args []string) (settings, error) {
	var o settings
	fs := flag.NewFlagSet("projload", flag.ContinueOnError)
	fs.StringVar(&o.natsURL, "nats", envOr("NATS_URL", "nats://127.0.0.1:4222"), "NATS URL")
	fs.StringVar(&o.mongoURI, "mongo", envOr("MONGODB_URI", "mongodb://127.0.0.1:27017/?directConnection=true"), "MongoDB URI")
	fs.StringVar(&o.control, "database", envOr("MONGODB_DATABASE", readmodel.DefaultDatabase), "control database of the read model")
	fs.StringVar(&o.prefix, "prefix", event.DefaultSubjectPrefix, "subject prefix")
	fs.IntVar(&o.rate, "rate", 100, "events per second; 0 publishes -count at once (drain test)")
	fs.DurationVar(&o.duration, "duration", 60*time.Second, "publishing time (with -rate > 0)")
	fs.IntVar(&o.count, "count", 3000, "events to publish with -rate 0 (0: none)")
	fs.IntVar(&o.users, "users", 50, "users the published todos belong to")
	fs.IntVar(&o.ceilings.Inserts, "inserts", 5000, "new documents per insertMany ceiling, at least -upserts (0 with -upserts 0 skips the ceilings)")
	fs.IntVar(&o.ceilings.Upserts, "upserts", 500, "guarded upserts of existing documents per upsert ceiling (0 skips them)")
	fs.IntVar(&o.ceilings.Batch, "batch", 100, "documents per insertMany (the projector's BATCH_SIZE)")
	fs.IntVar(&o.ceilings.Concurrency, "concurrency", 16, "writes in flight in the concurrent ceilings (the projector's WRITE_CONCURRENCY)")
	fs.DurationVar(&o.wait, "wait", 10*time.Minute, "bound on each ceiling and on waiting for the projector")
	fs.StringVar(&o.stream, "stream", "TODO_EVENTS", "stream; created like the publisher's when missing")
	fs.BoolVar(&o.json, "json", false, "print the results as one JSON document")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	o.ceilings.Limit = o.wait
	switch {
	case o.rate < 0 || o.count < 0:
		return o, errors.New("projload: -rate and -count must not be negative")
	case o.users < 1:
		return o, errors.New("projload: -users must be at least 1")
	}
	if err := o.ceilings.Validate(); err != nil {
		return o, fmt.Errorf("projload: -inserts, -upserts, -batch, -concurrency: %w", err)
	}
	return o, nil
}

func (r output) print(w io.Writer, asJSON bool) error {
	if asJSON {
		if err := json.NewEncoder(w).Encode(r); err != nil {
			return fmt.Errorf("write the report: %w", err)
		}
		return nil
	}
	if len(r.Ceilings.Ceilings) > 0 {
		fmt.Fprintf(w, "raw ceilings on %s (%d documents before):\n", r.Collection, r.CollectionDocs)
	}
	for _, c := range r.Ceilings.Ceilings {
		fmt.Fprintf(w, "  %-10s %2d in flight: %6d docs in %6.2fs = %6.0f docs/s\n", c.Operation, c.Concurrency, c.Docs, c.Seconds, c.DocsPerSec)
	}
	if d := r.Drain; d != nil {
		fmt.Fprintf(w, "events %d, target rate %d/s, published in %.3fs (%.0f/s)\n", d.Events, d.TargetRate, d.PublishSec, float64(d.Events)/d.PublishSec)
		fmt.Fprintf(w, "lag (occurred_at to projected_at): p50 %.0fms  p95 %.0fms  p99 %.0fms  max %.0fms\n", d.LagP50MS, d.LagP95MS, d.LagP99MS, d.LagMaxMS)
		fmt.Fprintf(w, "all applied %.3fs after the first publish: %.0f events/s through the projector\n", d.AppliedSec, d.EventsPerSec)
	}
	return nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
