package driver

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Watcher is the black-box lag probe: it takes a sample of acknowledged writes and
// polls the read model until each shows the written version, recording the time from
// the API's acknowledgement to the first poll that saw it. The acknowledgement comes
// just after the commit, so the figure errs low by the response's trip back and high
// by up to one poll interval (reported beside it).
type Watcher struct {
	coll   *mongo.Collection
	every  int // sample one write in every
	poll   time.Duration
	log    *slog.Logger
	mu     sync.Mutex
	offers int
	wait   map[string]pending
	lags   []LagSample
	polls  int
	pollT  time.Duration
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
// every poll.
func NewWatcher(coll *mongo.Collection, every int, poll time.Duration, log *slog.Logger) *Watcher {
	return &Watcher{coll: coll, every: max(every, 1), poll: poll, log: log, wait: map[string]pending{}}
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
	t := time.NewTicker(w.poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
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
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cur, err := w.coll.Find(fctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}},
		options.Find().SetProjection(bson.D{{Key: "version", Value: 1}}))
	if err != nil {
		return fmt.Errorf("find sampled todos: %w", err)
	}
	var docs []struct {
		ID      string `bson:"_id"`
		Version int64  `bson:"version"`
	}
	if err := cur.All(fctx, &docs); err != nil {
		return fmt.Errorf("read sampled todos: %w", err)
	}
	seen := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.polls++
	w.pollT += seen.Sub(start)
	for _, d := range docs {
		p, ok := w.wait[d.ID]
		if !ok || d.Version < p.version {
			continue
		}
		w.lags = append(w.lags, LagSample{Visible: seen, Lag: seen.Sub(p.acked)})
		delete(w.wait, d.ID)
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

// Forget drops the writes still waiting (between phases, so one phase's backlog is not
// charged to the next).
func (w *Watcher) Forget() {
	w.mu.Lock()
	defer w.mu.Unlock()
	clear(w.wait)
	w.polls, w.pollT = 0, 0
}
