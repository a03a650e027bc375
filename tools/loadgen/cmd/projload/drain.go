package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
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
	if err := ensureStream(ctx, js, o.stream, o.prefix); err != nil {
		return nil, err
	}
	pub := newPublisher(js, o.prefix, o.users)
	n := o.count
	if o.rate > 0 {
		n = int(o.duration.Seconds() * float64(o.rate))
	}
	start := time.Now()
	if err := pub.publishAll(ctx, n, o.rate); err != nil {
		return nil, err
	}
	published := time.Since(start)
	log.Info("published", "events", n, "seconds", published.Seconds())

	wctx, cancel := context.WithTimeout(ctx, o.wait)
	defer cancel()
	docs, err := waitForOwners(wctx, todos, pub.owners, n)
	if err != nil {
		return nil, err
	}
	d := lagSummary(docs, start)
	d.Events, d.TargetRate, d.PublishSec = n, o.rate, published.Seconds()
	d.EventsPerSec = float64(n) / d.AppliedSec
	return d, nil
}

// ensureStream creates the stream like the publisher's when it is missing.
func ensureStream(ctx context.Context, js jetstream.JetStream, stream, prefix string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		// Partitioned by owner like the publisher's (STREAM_PARTITIONS default).
		_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{event.StreamSubjects(prefix)},
			MaxMsgsPerSubject: 10, Duplicates: 2 * time.Minute, Storage: jetstream.FileStorage,
			SubjectTransform: event.PartitionTransform(prefix, 16)})
	}
	if err != nil {
		return fmt.Errorf("stream %s: %w", stream, err)
	}
	return nil
}

// publisher publishes todo.created events of made-up owners, in turn.
type publisher struct {
	js     jetstream.JetStream
	prefix string
	owners []uuid.UUID
	open   []int64 // each owner's todos so far: its stats snapshot
}

func newPublisher(js jetstream.JetStream, prefix string, users int) *publisher {
	p := &publisher{js: js, prefix: prefix, owners: make([]uuid.UUID, users), open: make([]int64, users)}
	for i := range p.owners {
		p.owners[i] = uuid.Must(uuid.NewV7())
	}
	return p
}

// publishAll publishes n events, rate a second or, with rate 0, all at once.
func (p *publisher) publishAll(ctx context.Context, n, rate int) error {
	if rate == 0 {
		for i := range n {
			if err := p.publish(ctx, i); err != nil {
				return err
			}
		}
		return nil
	}
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	for i := range n {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		if err := p.publish(ctx, i); err != nil {
			return err
		}
	}
	return nil
}

// publish publishes the i-th event, a todo of the owner whose turn it is.
func (p *publisher) publish(ctx context.Context, i int) error {
	id := uuid.Must(uuid.NewV7())
	k := i % len(p.owners)
	owner := p.owners[k]
	p.open[k]++
	now := time.Now().UTC()
	td := event.TodoData{ID: id, UserID: owner, Title: fmt.Sprintf("load %d", i), Priority: "normal", Version: 1, CreatedAt: now, UpdatedAt: now}
	e, err := event.New(event.TodoCreated, id, owner, 1, now, event.TraceContext{RequestID: "projload"}, td)
	if err != nil {
		return err
	}
	e.Stats = &event.Stats{Open: p.open[k], Version: p.open[k]}
	b, err := e.Encode()
	if err != nil {
		return err
	}
	msg := nats.NewMsg(event.Subject(p.prefix, e))
	msg.Data = b
	msg.Header.Set(jetstream.MsgIDHeader, e.ID.String())
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := p.js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	return nil
}

// lagSummary is the lag distribution of docs (projected_at minus created_at, the publish
// time), and how long after start the last of them was applied.
func lagSummary(docs []readmodel.Todo, start time.Time) *drain {
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
	return &drain{AppliedSec: last.Sub(start).Seconds(), LagP50MS: q(0.50), LagP95MS: q(0.95), LagP99MS: q(0.99), LagMaxMS: q(1)}
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
