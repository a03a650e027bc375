// Command projload measures the read side against a running projector.
//
// Raw ceilings (-inserts, -upserts): what the MongoDB server itself does with the
// projector's own kinds of write, measured on the active read model's todos collection
// (so with its size and its indexes, the FerretDB GIN indexes included): unordered
// insertMany of new documents in batches of -batch, one batch at a time and -concurrency
// at a time, then version-guarded single upserts of existing documents, one at a time
// and -concurrency at a time. The documents belong to made-up owners and are deleted at
// the end. Only operations the FerretDB stand-in handles are used: it hangs on bulk
// updates of more than about 40 statements (see the brief), so there are none.
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
// prints one JSON document (see report) instead of text: `make bench` reads it.
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
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/process"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
)

func main() {
	process.Main("projload", run)
}

// report is everything one run measured; -json prints it.
type report struct {
	Collection     string    `json:"collection"`
	CollectionDocs int64     `json:"collection_docs"` // before the ceilings
	Ceilings       []ceiling `json:"ceilings"`
	Drain          *drain    `json:"drain,omitempty"`
}

// ceiling is one raw measurement: Docs writes of Operation with Concurrency in flight.
type ceiling struct {
	Operation   string  `json:"operation"` // opInsertMany or opUpsert
	Concurrency int     `json:"concurrency"`
	Batch       int     `json:"batch,omitempty"`
	Docs        int     `json:"docs"`
	Seconds     float64 `json:"seconds"`
	DocsPerSec  float64 `json:"docs_per_sec"`
}

// The operations of a ceiling.
const (
	opInsertMany = "insertMany"
	opUpsert     = "upsert"
)

// drain is the outcome of publishing events and waiting for the projector.
type drain struct {
	Events       int     `json:"events"`
	TargetRate   int     `json:"target_rate"` // 0: all at once
	PublishSec   float64 `json:"publish_seconds"`
	AppliedSec   float64 `json:"applied_seconds"` // first publish to the last projected_at
	EventsPerSec float64 `json:"events_per_sec"`
	LagP50MS     float64 `json:"lag_p50_ms"`
	LagP95MS     float64 `json:"lag_p95_ms"`
	LagP99MS     float64 `json:"lag_p99_ms"`
	LagMaxMS     float64 `json:"lag_max_ms"`
}

type settings struct {
	natsURL, mongoURI, control, prefix, stream string
	rate, count, users                         int
	duration, wait                             time.Duration
	inserts, upserts, batch, concurrency       int
	json                                       bool
}

func run(ctx context.Context, log *slog.Logger) error {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		return err
	}
	client, err := mongo.Connect(options.Client().ApplyURI(o.mongoURI).SetServerSelectionTimeout(10 * time.Second).
		SetMaxPoolSize(uint64(o.concurrency) + 4))
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
	rep := report{Collection: db.Name() + "." + todos.Name()}

	if o.inserts > 0 || o.upserts > 0 {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		rep.CollectionDocs, err = todos.EstimatedDocumentCount(cctx)
		cancel()
		if err != nil {
			return fmt.Errorf("count %s: %w", rep.Collection, err)
		}
		if rep.Ceilings, err = ceilings(ctx, todos, o.inserts, o.upserts, o.batch, o.concurrency, o.wait); err != nil {
			return err
		}
	}
	if o.rate > 0 || o.count > 0 {
		if rep.Drain, err = publishAndWait(ctx, log, o, todos); err != nil {
			return err
		}
	}
	return rep.print(os.Stdout, o.json)
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
	fs.IntVar(&o.inserts, "inserts", 5000, "new documents per insertMany ceiling, at least -upserts (0 with -upserts 0 skips the ceilings)")
	fs.IntVar(&o.upserts, "upserts", 500, "guarded upserts of existing documents per upsert ceiling (0 skips them)")
	fs.IntVar(&o.batch, "batch", 100, "documents per insertMany (the projector's BATCH_SIZE)")
	fs.IntVar(&o.concurrency, "concurrency", 16, "writes in flight in the concurrent ceilings (the projector's WRITE_CONCURRENCY)")
	fs.DurationVar(&o.wait, "wait", 10*time.Minute, "bound on each ceiling and on waiting for the projector")
	fs.StringVar(&o.stream, "stream", "TODO_EVENTS", "stream; created like the publisher's when missing")
	fs.BoolVar(&o.json, "json", false, "print the results as one JSON document")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case o.rate < 0 || o.count < 0 || o.inserts < 0 || o.upserts < 0:
		return o, errors.New("projload: -rate, -count, -inserts and -upserts must not be negative")
	case o.users < 1 || o.batch < 1 || o.concurrency < 1:
		return o, errors.New("projload: -users, -batch and -concurrency must be at least 1")
	case max(o.inserts, o.upserts) > maxInserts:
		return o, fmt.Errorf("projload: -inserts and -upserts at most %d (FerretDB deletes the ceiling's documents in one statement)", maxInserts)
	}
	return o, nil
}

// maxInserts keeps the documents of one ceiling round, which FerretDB deletes with one
// statement binding each _id, within PostgreSQL's 65,535 bind parameters.
const maxInserts = 60000

// ceilings runs the raw measurements on coll with documents of made-up owners, and
// deletes them afterwards (also when a measurement fails). Each measurement is bounded
// by limit.
func ceilings(ctx context.Context, coll *mongo.Collection, inserts, upserts, batch, concurrency int, limit time.Duration) (_ []ceiling, err error) {
	// Each insertMany round has an owner of its own, deleted on its own: FerretDB
	// deletes the matches of a filter with one statement that binds every _id, and
	// PostgreSQL binds at most 65,535 parameters (see maxInserts).
	var owners []string
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), limit)
		defer cancel()
		for _, owner := range owners {
			if _, derr := coll.DeleteMany(dctx, bson.D{{Key: "user_id", Value: owner}}); derr != nil {
				err = errors.Join(err, fmt.Errorf("delete the ceiling's documents: %w", derr))
			}
		}
	}()
	// Each upsert round updates documents of one insertMany round.
	inserts = max(inserts, upserts)
	var (
		out    []ceiling
		rounds [][]string // the ids each insertMany round wrote
	)
	for _, c := range []int{1, concurrency} {
		owner := uuid.Must(uuid.NewV7()).String()
		owners = append(owners, owner)
		next := newIDs(inserts)
		rounds = append(rounds, next)
		cl, err := measure(ctx, limit, opInsertMany, c, len(next), func(ctx context.Context, worker int) error {
			for i := worker * batch; i < len(next); i += c * batch {
				if err := insertBatch(ctx, coll, owner, next[i:min(i+batch, len(next))]); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return out, err
		}
		cl.Batch = batch
		out = append(out, cl)
	}
	if upserts == 0 {
		return out, nil
	}
	for round, c := range []int{1, concurrency} {
		part := rounds[round][:upserts]
		cl, err := measure(ctx, limit, opUpsert, c, len(part), func(ctx context.Context, worker int) error {
			for i := worker; i < len(part); i += c {
				if err := guardedUpsert(ctx, coll, owners[round], part[i], 2); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return out, err
		}
		out = append(out, cl)
	}
	return out, nil
}

// measure runs work on workers goroutines (worker 0 to workers-1), bounded by limit,
// and times the whole.
func measure(ctx context.Context, limit time.Duration, op string, workers, docs int, work func(ctx context.Context, worker int) error) (ceiling, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	errs := make([]error, workers)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() { errs[w] = work(ctx, w) })
	}
	wg.Wait()
	el := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return ceiling{}, fmt.Errorf("%s ceiling, %d in flight: %w", op, workers, err)
	}
	return ceiling{Operation: op, Concurrency: workers, Docs: docs, Seconds: el.Seconds(), DocsPerSec: float64(docs) / el.Seconds()}, nil
}

func newIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = uuid.Must(uuid.NewV7()).String()
	}
	return ids
}

func todoDoc(id, owner string, version int64) readmodel.Todo {
	now := time.Now().UTC()
	return readmodel.Todo{ID: id, UserID: owner, Title: "projload ceiling", Priority: "normal", Version: version,
		CreatedAt: now, UpdatedAt: now, ProjectedAt: now}
}

// insertBatch inserts new documents unordered: FerretDB writes them as multi-row
// INSERTs with no lookup.
func insertBatch(ctx context.Context, coll *mongo.Collection, owner string, ids []string) error {
	docs := make([]any, len(ids))
	for i, id := range ids {
		docs[i] = todoDoc(id, owner, 1)
	}
	if _, err := coll.InsertMany(ctx, docs, options.InsertMany().SetOrdered(false)); err != nil {
		return fmt.Errorf("insertMany of %d: %w", len(ids), err)
	}
	return nil
}

// guardedUpsert is the projector's write of an existing document: the filter matches
// only an older version.
func guardedUpsert(ctx context.Context, coll *mongo.Collection, owner, id string, version int64) error {
	_, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "version", Value: bson.D{{Key: "$lt", Value: version}}}},
		bson.D{{Key: "$set", Value: todoDoc(id, owner, version)}}, options.UpdateOne().SetUpsert(true))
	if err != nil {
		return fmt.Errorf("upsert %s: %w", id, err)
	}
	return nil
}

// publishAndWait publishes todo.created events, waits until todos holds them all and
// reads their lag back.
func publishAndWait(ctx context.Context, log *slog.Logger, o settings, todos *mongo.Collection) (*drain, error) {
	nc, err := nats.Connect(o.natsURL, nats.Timeout(10*time.Second))
	if err != nil {
		return nil, fmt.Errorf("connect to nats: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	_, err = js.Stream(sctx, o.stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		// Partitioned by owner like the publisher's (STREAM_PARTITIONS default).
		_, err = js.CreateStream(sctx, jetstream.StreamConfig{Name: o.stream, Subjects: []string{event.StreamSubjects(o.prefix)},
			MaxMsgsPerSubject: 10, Duplicates: 2 * time.Minute, Storage: jetstream.FileStorage,
			SubjectTransform: event.PartitionTransform(o.prefix, 16)})
	}
	scancel()
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", o.stream, err)
	}

	owners := make([]uuid.UUID, o.users)
	open := make([]int64, o.users) // each owner's todos so far: its stats snapshot
	for i := range owners {
		owners[i] = uuid.Must(uuid.NewV7())
	}
	publish := func(i int) error {
		id := uuid.Must(uuid.NewV7())
		k := i % len(owners)
		owner := owners[k]
		open[k]++
		now := time.Now().UTC()
		td := event.TodoData{ID: id, UserID: owner, Title: fmt.Sprintf("load %d", i), Priority: "normal", Version: 1, CreatedAt: now, UpdatedAt: now}
		e, err := event.New(event.TodoCreated, id, owner, 1, now, event.TraceContext{RequestID: "projload"}, td)
		if err != nil {
			return err
		}
		e.Stats = &event.Stats{Open: open[k], Version: open[k]}
		b, err := e.Encode()
		if err != nil {
			return err
		}
		msg := nats.NewMsg(event.Subject(o.prefix, e))
		msg.Data = b
		msg.Header.Set(jetstream.MsgIDHeader, e.ID.String())
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, err := js.PublishMsg(pctx, msg); err != nil {
			return fmt.Errorf("publish: %w", err)
		}
		return nil
	}

	n := o.count
	if o.rate > 0 {
		n = int(o.duration.Seconds() * float64(o.rate))
	}
	start := time.Now()
	if o.rate > 0 {
		tick := time.NewTicker(time.Second / time.Duration(o.rate))
		defer tick.Stop()
		for i := range n {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-tick.C:
			}
			if err := publish(i); err != nil {
				return nil, err
			}
		}
	} else {
		for i := range n {
			if err := publish(i); err != nil {
				return nil, err
			}
		}
	}
	published := time.Since(start)
	log.Info("published", "events", n, "seconds", published.Seconds())

	wctx, cancel := context.WithTimeout(ctx, o.wait)
	defer cancel()
	docs, err := waitForOwners(wctx, todos, owners, n)
	if err != nil {
		return nil, err
	}
	lags := make([]time.Duration, len(docs))
	var last time.Time
	for i, d := range docs {
		lags[i] = d.ProjectedAt.Sub(d.CreatedAt)
		if d.ProjectedAt.After(last) {
			last = d.ProjectedAt
		}
	}
	slices.Sort(lags)
	q := func(p float64) float64 {
		return float64(lags[min(len(lags)-1, int(p*float64(len(lags))))].Microseconds()) / 1000
	}
	applied := last.Sub(start)
	return &drain{Events: n, TargetRate: o.rate, PublishSec: published.Seconds(), AppliedSec: applied.Seconds(),
		EventsPerSec: float64(n) / applied.Seconds(), LagP50MS: q(0.50), LagP95MS: q(0.95), LagP99MS: q(0.99), LagMaxMS: q(1)}, nil
}

// waitForOwners polls until the owners' todos number want, then returns them. It
// selects by owner, one equality per query: FerretDB serves that from an index, where
// an $in over many ids would read the whole collection.
func waitForOwners(ctx context.Context, todos *mongo.Collection, owners []uuid.UUID, want int) ([]readmodel.Todo, error) {
	for {
		var have int64
		for _, o := range owners {
			n, err := todos.CountDocuments(ctx, bson.D{{Key: "user_id", Value: o.String()}})
			if err != nil {
				return nil, fmt.Errorf("count the published todos: %w", err)
			}
			have += n
		}
		if have >= int64(want) {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("only %d of %d visible: %w", have, want, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
	var docs []readmodel.Todo
	for _, o := range owners {
		cur, err := todos.Find(ctx, bson.D{{Key: "user_id", Value: o.String()}})
		if err != nil {
			return nil, fmt.Errorf("read the published todos: %w", err)
		}
		var part []readmodel.Todo
		if err := cur.All(ctx, &part); err != nil {
			return nil, fmt.Errorf("read the published todos: %w", err)
		}
		docs = append(docs, part...)
	}
	return docs, nil
}

func (r report) print(w io.Writer, asJSON bool) error {
	if asJSON {
		if err := json.NewEncoder(w).Encode(r); err != nil {
			return fmt.Errorf("write the report: %w", err)
		}
		return nil
	}
	if len(r.Ceilings) > 0 {
		fmt.Fprintf(w, "raw ceilings on %s (%d documents before):\n", r.Collection, r.CollectionDocs)
	}
	for _, c := range r.Ceilings {
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
