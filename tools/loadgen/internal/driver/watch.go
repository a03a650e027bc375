package driver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"golang.org/x/sync/errgroup"
)

// Watcher is the black-box lag probe: it takes a sample of acknowledged writes and
// polls the read model until each shows the written version, recording the time from
// the API's acknowledgement to the read that saw it. The acknowledgement comes just
// after the commit, so the figure errs low by the response's trip back and high by up
// to one poll interval plus one poll (both reported beside it).
//
// Each sampled write is read on its own, by _id: an equality that the FerretDB
// stand-in serves from an index, where one query with $in over the sampled ids would
// read the whole collection on every poll. A poll reads at most readers documents at a
// time and the next poll starts an interval after it ended, so the probe's load on the
// server stays bounded however far the read model falls behind.
type Watcher struct {
	coll    *mongo.Collection
	every   int // sample one write in every
	poll    time.Duration
	readers int
	log     *slog.Logger
	mu      sync.Mutex
	offers  int
	wait    map[string]pending
	lags    []LagSample
	polls   int
	pollT   time.Duration
}

type pending struct {
	version int64
	acked   time.Time
}

// LagSample is one sampled write's lag, and when it became visible.
type LagSample struct {
	Visible time.Time
	Lag     time.Duration
}

// NewWatcher samples one write in every and polls coll (the active todos collection)
// every poll, with up to readers reads in flight.
func NewWatcher(coll *mongo.Collection, every int, poll time.Duration, readers int, log *slog.Logger) *Watcher {
	return &Watcher{coll: coll, every: max(every, 1), poll: poll, readers: max(readers, 1), log: log, wait: map[string]pending{}}
}

// Offer hands the watcher an acknowledged write; it keeps one in every.
func (w *Watcher) Offer(id string, version int64, acked time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.offers++
	if w.offers%w.every != 0 {
		return
	}
	// A newer write of the same todo supersedes the older one: the older may never
	// be seen on its own.
	w.wait[id] = pending{version: version, acked: acked}
}

// Run polls until ctx ends. It is the watcher's only goroutine; the caller owns it.
func (w *Watcher) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(w.poll):
		}
		if err := w.pollOnce(ctx); err != nil && ctx.Err() == nil {
			w.log.Warn("black-box poll", "error", err)
		}
	}
}

func (w *Watcher) pollOnce(ctx context.Context) error {
	w.mu.Lock()
	ids := make([]string, 0, len(w.wait))
	for id := range w.wait {
		ids = append(ids, id)
	}
	w.mu.Unlock()
	if len(ids) == 0 {
		return nil
	}
	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(w.readers)
	for _, id := range ids {
		g.Go(func() error { return w.read(gctx, id) })
	}
	err := g.Wait()
	w.mu.Lock()
	w.polls++
	w.pollT += time.Since(start)
	w.mu.Unlock()
	return err
}

// read looks up one sampled todo and records its lag if it shows the written version.
func (w *Watcher) read(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var doc struct {
		Version int64 `bson:"version"`
	}
	err := w.coll.FindOne(ctx, bson.D{{Key: "_id", Value: id}}, options.FindOne().SetProjection(bson.D{{Key: "version", Value: 1}})).Decode(&doc)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("find sampled todo %s: %w", id, err)
	}
	seen := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if p, ok := w.wait[id]; ok && doc.Version >= p.version {
		w.lags = append(w.lags, LagSample{Visible: seen, Lag: seen.Sub(p.acked)})
		delete(w.wait, id)
	}
	return nil
}

// Take returns the lags recorded since the last Take, how many sampled writes are
// still not visible, and the mean time one poll took.
func (w *Watcher) Take() (lags []LagSample, unseen int, meanPoll time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	lags, w.lags = w.lags, nil
	if w.polls > 0 {
		meanPoll = w.pollT / time.Duration(w.polls)
	}
	return lags, len(w.wait), meanPoll
}
