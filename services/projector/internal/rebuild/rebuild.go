// Package rebuild fills a fresh read-model database from the stream and switches
// readers to it without downtime.
//
// How: a new durable consumer (its own name) applies the stream into the fresh
// database, with the same code as the live projector, while the live projector keeps
// serving the old one. Once the rebuild consumer has acknowledged everything up to the
// stream's last sequence, the pointer document in the control database is flipped to
// the fresh database: readers (the API) and the live projector both look the pointer
// up per request and per batch, so they move over by themselves. A live batch that
// read the old pointer just before the flip may still land in the old database, so the
// rebuild consumer keeps running for a settle period and then catches up to the
// stream's last sequence once more, covering anything such a batch applied; every
// write is idempotent, so applying an event in both places is harmless. Then the
// rebuild consumer is deleted. The old database is left for the operator to drop.
//
// Only the newest message of each subject is read (DeliverLastPerSubject), then every
// message that arrives after: a subject is one aggregate, every event carries the
// aggregate's full state (or its tombstone), so the newest message of each subject
// holds its aggregate's final state; and every event carries its owner's stats
// snapshot, so the newest of a user's events, being the newest of its subject, brings
// the user's final stats. A rebuild therefore costs one message per aggregate, not one
// per event, and the stream, which keeps the newest messages of every subject without
// a maximum age, holds everything it needs. Events written before events carried stats
// have none: run `todoctl resync --all` once before rebuilding from a stream that
// old.
package rebuild

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/consumer"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/metrics"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
	"github.com/outboxtodo/outboxtodo/shared/readmodel/ferretindex"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultBatchSize is the rebuild consumer's batch when Config.BatchSize is 0: larger
// than the live consumer's, since the rebuild has no latency to keep and a batch's
// documents go to the fresh database as bulk inserts. Batches of 2,000 to 8,000 were
// no faster on the FerretDB stand-in (BenchmarkRebuild, within its noise).
const DefaultBatchSize = 1000

// minFetchWait is the least FetchWait of the rebuild consumer: its pulls must not
// expire while the server sends the snapshot (see consumer.Config.DeliverPolicy), even
// on a busy machine, whatever FETCH_WAIT the live consumer uses for its latency.
const minFetchWait = 2 * time.Second

// Config tunes a rebuild.
type Config struct {
	// Consumer is the live consumer's config; Durable, Database, DeliverPolicy and
	// BatchSize are replaced, MaxAckPending and FetchWait raised where needed.
	Consumer consumer.Config
	// BatchSize is the rebuild consumer's batch (DefaultBatchSize when 0).
	BatchSize int
	// Database is the fresh database to fill; it must hold no users or todos.
	Database string
	// FerretDBPostgreSQLURL, when set, is the PostgreSQL database behind a FerretDB
	// read model: the fresh database's collections get their indexes there (package
	// ferretindex) before the first write.
	FerretDBPostgreSQLURL string
	// Settle is how long the old pointer may still be in use after the flip: at
	// least one live batch (FetchWait plus the MongoDB write timeout).
	Settle time.Duration
	// Timeout bounds the whole rebuild.
	Timeout time.Duration
}

// Result describes a finished rebuild.
type Result struct {
	Database string
	Previous string
	Events   uint64 // stream sequence reached
	// Messages were delivered to the rebuild consumer until it caught up: about one
	// per aggregate.
	Messages          uint64
	CatchUp           time.Duration
	MessagesPerSecond float64
}

// Run rebuilds into cfg.Database and switches readers to it.
func Run(ctx context.Context, cfg Config, js jetstream.JetStream, store *readmodel.Store, log *slog.Logger) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	res := Result{Database: cfg.Database}
	previous, err := store.ActiveName(ctx)
	if err != nil {
		return res, err
	}
	res.Previous = previous
	if cfg.Database == previous {
		return res, fmt.Errorf("%s is the active read model: rebuild into a fresh database", cfg.Database)
	}
	if err := prepare(ctx, cfg, store, log); err != nil {
		return res, err
	}
	cc := rebuildConsumer(cfg)
	c := consumer.New(cc, js, store, metrics.New(prometheus.NewRegistry()), log)
	cons, err := c.Ensure(ctx)
	if err != nil {
		return res, err
	}
	defer func() {
		dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer dcancel()
		if err := js.DeleteConsumer(dctx, cc.Stream, cc.Durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			log.Warn("rebuild consumer not deleted", "consumer", cc.Durable, "error", err)
		}
	}()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	defer func() { stop(); <-done }()

	start := time.Now()
	seq, delivered, err := catchUp(ctx, js, cons, cc.Stream)
	if err != nil {
		return res, err
	}
	res.CatchUp = time.Since(start)
	res.Events, res.Messages = seq, delivered
	if s := res.CatchUp.Seconds(); s > 0 {
		res.MessagesPerSecond = float64(delivered) / s
	}
	log.Info("rebuild caught up", "database", cfg.Database, "stream_seq", seq, "messages", delivered, "seconds", res.CatchUp.Seconds())

	if err := switchTo(ctx, store.Control(), cfg.Database); err != nil {
		return res, err
	}
	log.Info("read model switched", "from", previous, "to", cfg.Database)
	select {
	case <-ctx.Done():
		return res, fmt.Errorf("settle after the switch: %w", ctx.Err())
	case <-time.After(cfg.Settle):
	}
	if res.Events, _, err = catchUp(ctx, js, cons, cc.Stream); err != nil {
		return res, err
	}
	return res, nil
}

// switchTo makes database the active read model: it writes the pointer document that
// readers resolve (readmodel.Store.Active), creating it on the first rebuild.
func switchTo(ctx context.Context, control *mongo.Database, database string) error {
	p := readmodel.Pointer{ID: readmodel.PointerID, Database: database, SwitchedAt: time.Now().UTC()}
	_, err := control.Collection(readmodel.CollPointer).ReplaceOne(ctx, bson.D{{Key: "_id", Value: readmodel.PointerID}}, p,
		options.Replace().SetUpsert(true))
	if err != nil {
		return fmt.Errorf("switch the read model to %s: %w", database, err)
	}
	return nil
}

// prepare checks that cfg.Database is fresh, holding no users or todos, and gives its
// collections their indexes before the first write.
func prepare(ctx context.Context, cfg Config, store *readmodel.Store, log *slog.Logger) error {
	target := store.Control().Client().Database(cfg.Database)
	for _, c := range []string{readmodel.CollUsers, readmodel.CollTodos} {
		n, err := target.Collection(c).CountDocuments(ctx, bson.D{})
		if err != nil {
			return fmt.Errorf("check %s is empty: %w", cfg.Database, err)
		}
		if n > 0 {
			return fmt.Errorf("database %s already holds %s: rebuild into a fresh database", cfg.Database, c)
		}
	}
	return ferretindex.EnsureAll(ctx, cfg.FerretDBPostgreSQLURL, target, store.Control(), log)
}

// rebuildConsumer is the live consumer's config made the rebuild's (see
// Config.Consumer).
func rebuildConsumer(cfg Config) consumer.Config {
	cc := cfg.Consumer
	cc.Durable = "rebuild-" + cfg.Database
	cc.Database = cfg.Database
	cc.DeliverPolicy = jetstream.DeliverLastPerSubjectPolicy
	cc.BatchSize = cmp.Or(cfg.BatchSize, DefaultBatchSize)
	// Room for the batch being applied and the one fetched ahead.
	cc.MaxAckPending = max(cc.MaxAckPending, 2*cc.BatchSize)
	cc.FetchWait = max(cc.FetchWait, minFetchWait)
	// Its gauges would go to a registry nobody reads (Run's metrics.New).
	cc.StatsInterval = 0
	return cc
}

// catchUp waits until the consumer has acknowledged every message up to the stream's
// last sequence at the time of the call, and returns that sequence and how many
// messages the consumer has been delivered. The stream's last message is the newest
// of its subject, so even a consumer that skips older messages acknowledges it; when
// that message was deleted (package erasure removes old messages of a deleted user
// that arrived after their tombstone), the consumer is caught up once nothing is
// pending or unacknowledged.
func catchUp(ctx context.Context, js jetstream.JetStream, cons jetstream.Consumer, stream string) (last, delivered uint64, _ error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, 0, fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("stream %s: %w", stream, err)
	}
	last = info.State.LastSeq
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		ci, err := cons.Info(ctx)
		if err == nil && (ci.AckFloor.Stream >= last || (ci.NumPending == 0 && ci.NumAckPending == 0)) {
			return last, ci.Delivered.Consumer, nil
		}
		select {
		case <-ctx.Done():
			return 0, 0, fmt.Errorf("catch up to %d: %w", last, ctx.Err())
		case <-t.C:
		}
	}
}
