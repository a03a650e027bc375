// Command projload measures the read side against a running projector: it publishes
// todo.created events straight into the stream at a steady rate (as the publisher
// would, occurred_at = publish time), waits until the projector has written them all,
// and reports the sync lag per event (projected_at minus occurred_at, read back from
// the documents) as p50/p95/p99, plus the raw single-upsert rate of the same MongoDB
// server measured in the same run. With -rate 0 it publishes everything at once and
// reports the drain rate: the highest rate the read side sustains.
//
// It measures the projector's part of the pipeline (stream to MongoDB); the API and
// the publisher add their own latency before an event reaches the stream.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
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

func run(ctx context.Context, log *slog.Logger) error {
	fs := flag.NewFlagSet("projload", flag.ContinueOnError)
	natsURL := fs.String("nats", envOr("NATS_URL", "nats://127.0.0.1:4222"), "NATS URL")
	mongoURI := fs.String("mongo", envOr("MONGODB_URI", "mongodb://127.0.0.1:27017/?directConnection=true"), "MongoDB URI")
	control := fs.String("database", envOr("MONGODB_DATABASE", readmodel.DefaultDatabase), "control database of the read model")
	prefix := fs.String("prefix", event.DefaultSubjectPrefix, "subject prefix")
	rate := fs.Int("rate", 100, "events per second; 0 publishes all at once (drain test)")
	duration := fs.Duration("duration", 60*time.Second, "publishing time (with -rate > 0)")
	count := fs.Int("count", 3000, "events to publish with -rate 0")
	users := fs.Int("users", 50, "users the todos belong to")
	upserts := fs.Int("upserts", 500, "single upserts for the raw rate measurement (0 skips it)")
	wait := fs.Duration("wait", 10*time.Minute, "bound on waiting for the projector")
	stream := fs.String("stream", "TODO_EVENTS", "stream; created like the publisher's when missing")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	client, err := mongo.Connect(options.Client().ApplyURI(*mongoURI).SetServerSelectionTimeout(10 * time.Second))
	if err != nil {
		return err
	}
	defer func() { _ = client.Disconnect(context.WithoutCancel(ctx)) }()
	nc, err := nats.Connect(*natsURL)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}

	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	_, err = js.Stream(sctx, *stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = js.CreateStream(sctx, jetstream.StreamConfig{Name: *stream, Subjects: []string{event.StreamSubjects(*prefix)},
			MaxMsgsPerSubject: 10, Duplicates: 2 * time.Minute, Storage: jetstream.FileStorage})
	}
	scancel()
	if err != nil {
		return fmt.Errorf("stream %s: %w", *stream, err)
	}

	if *upserts > 0 {
		// Measure the ceiling at the size the read model's todos collection has now:
		// FerretDB scans a collection per lookup, so its rate falls as it grows.
		db, err := readmodel.NewStore(client, *control).Active(ctx)
		if err != nil {
			return err
		}
		size, err := db.Collection(readmodel.CollTodos).EstimatedDocumentCount(ctx)
		if err != nil {
			return fmt.Errorf("count todos: %w", err)
		}
		if err := rawUpserts(ctx, client, *upserts, int(size)); err != nil {
			return err
		}
	}

	owners := make([]uuid.UUID, *users)
	for i := range owners {
		owners[i] = uuid.Must(uuid.NewV7())
	}
	publish := func(i int) (uuid.UUID, error) {
		id := uuid.Must(uuid.NewV7())
		owner := owners[i%len(owners)]
		now := time.Now().UTC()
		td := event.TodoData{ID: id, UserID: owner, Title: fmt.Sprintf("load %d", i), Priority: "normal", Version: 1, CreatedAt: now, UpdatedAt: now}
		e, err := event.New(event.TodoCreated, id, owner, 1, now, event.TraceContext{RequestID: "projload"}, td)
		if err != nil {
			return id, err
		}
		b, err := e.Encode()
		if err != nil {
			return id, err
		}
		msg := nats.NewMsg(event.Subject(*prefix, e))
		msg.Data = b
		msg.Header.Set(jetstream.MsgIDHeader, e.ID.String())
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err = js.PublishMsg(pctx, msg)
		return id, err
	}

	var ids []string
	start := time.Now()
	if *rate > 0 {
		n := int(duration.Seconds() * float64(*rate))
		tick := time.NewTicker(time.Second / time.Duration(*rate))
		for i := range n {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-tick.C:
			}
			id, err := publish(i)
			if err != nil {
				return fmt.Errorf("publish: %w", err)
			}
			ids = append(ids, id.String())
		}
		tick.Stop()
	} else {
		for i := range *count {
			id, err := publish(i)
			if err != nil {
				return fmt.Errorf("publish: %w", err)
			}
			ids = append(ids, id.String())
		}
	}
	published := time.Since(start)
	log.Info("published", "events", len(ids), "seconds", published.Seconds())

	store := readmodel.NewStore(client, *control)
	wctx, cancel := context.WithTimeout(ctx, *wait)
	defer cancel()
	db, err := store.Active(wctx)
	if err != nil {
		return err
	}
	todos := db.Collection(readmodel.CollTodos)
	filter := bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}}
	for {
		n, err := todos.CountDocuments(wctx, filter)
		if err != nil {
			return err
		}
		if n == int64(len(ids)) {
			break
		}
		select {
		case <-wctx.Done():
			return fmt.Errorf("only %d of %d visible: %w", n, len(ids), wctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}

	cur, err := todos.Find(wctx, filter)
	if err != nil {
		return err
	}
	var docs []readmodel.Todo
	if err := cur.All(wctx, &docs); err != nil {
		return err
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
	q := func(p float64) time.Duration {
		return lags[min(len(lags)-1, int(p*float64(len(lags))))].Round(time.Millisecond)
	}
	fmt.Printf("events %d, target rate %d/s, published in %s (%.0f/s)\n", len(ids), *rate, published.Round(time.Millisecond), float64(len(ids))/published.Seconds())
	fmt.Printf("lag (occurred_at to projected_at): p50 %s  p95 %s  p99 %s  max %s\n", q(0.50), q(0.95), q(0.99), lags[len(lags)-1].Round(time.Millisecond))
	fmt.Printf("all applied %s after the first publish: %.0f events/s through the projector\n",
		last.Sub(start).Round(time.Millisecond), float64(len(ids))/last.Sub(start).Seconds())
	return nil
}

// rawUpserts measures the server's own ceiling: single version-guarded upserts of new
// documents, sequential and 16 at a time, into a scratch collection first filled with
// prefill documents (inserted in bulks of new documents, which FerretDB handles).
func rawUpserts(ctx context.Context, client *mongo.Client, n, prefill int) error {
	db := client.Database("projload_raw_" + time.Now().UTC().Format("20060102150405"))
	defer func() { _ = db.Drop(context.WithoutCancel(ctx)) }()
	coll := db.Collection("docs")
	for i := 0; i < prefill; i += 1000 {
		docs := make([]any, 0, 1000)
		for j := i; j < min(i+1000, prefill); j++ {
			docs = append(docs, bson.D{{Key: "_id", Value: fmt.Sprintf("fill-%d", j)}, {Key: "version", Value: 1}, {Key: "title", Value: "fill"}})
		}
		ictx, cancel := context.WithTimeout(ctx, time.Minute)
		_, err := coll.InsertMany(ictx, docs)
		cancel()
		if err != nil {
			return fmt.Errorf("prefill: %w", err)
		}
	}
	upsert := func(i int) error {
		uctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		id := fmt.Sprintf("doc-%d", i)
		_, err := coll.UpdateOne(uctx, bson.D{{Key: "_id", Value: id}, {Key: "version", Value: bson.D{{Key: "$lt", Value: 1}}}},
			bson.D{{Key: "$set", Value: bson.D{{Key: "version", Value: 1}, {Key: "title", Value: "raw"}}}}, options.UpdateOne().SetUpsert(true))
		return err
	}
	start := time.Now()
	for i := range n {
		if err := upsert(i); err != nil {
			return fmt.Errorf("raw upsert: %w", err)
		}
	}
	seq := time.Since(start)
	start = time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 16 {
		wg.Go(func() {
			for i := n + w; i < 2*n; i += 16 {
				if err := upsert(i); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return fmt.Errorf("raw upsert: %w", err)
	}
	par := time.Since(start)
	fmt.Printf("raw single upserts: sequential %.0f/s, 16 concurrent %.0f/s (%d each, collection growing from %d to %d docs)\n",
		float64(n)/seq.Seconds(), float64(n)/par.Seconds(), n, prefill, prefill+2*n)
	return nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
