// Package partition shares the stream's owner partitions among the projector's live
// replicas: each partition is consumed by exactly one replica at a time, in stream
// order, every live replica takes a balanced share, a dead replica's partitions move
// to the others within MemberTTL (plus PinnedTTL), and a replica stopping on SIGTERM
// hands its partitions over as soon as it has finished and acknowledged its batches.
//
// The stream stores every event under its owner's partition (event.PartitionTransform);
// the partition count is read from the stream's configuration. Each partition has its
// own durable pull consumer, <durable>-p<i>, filtered on event.PartitionFilter and run
// by package consumer, with JetStream's pinned
// client policy (consumer.PinGroup): the server itself delivers a partition to one
// client at a time. The consumers of a replica feed one consumer.Pipeline: what its
// partitions fetched is applied in batches that span them all (concurrent across
// aggregates, each partition's messages in stream order, the failure policy and
// shutdown semantics described in package consumer), so that a batch holds many
// events however thinly the load spreads over the partitions.
//
// Who consumes what is agreed in a KV bucket (Config.Bucket) whose keys live MemberTTL
// unless refreshed:
//
//   - m.<member>: each live replica's heartbeat, put every MemberTTL/3. Every replica
//     watches these keys; a member unheard of for MemberTTL is dead.
//   - c.<unit>: the claim of a unit (p<i>, a partition, or legacy), created with
//     kv.Create (so one replica wins) by the member Assign gives the unit to, refreshed
//     with kv.Update on its revision at every heartbeat, and deleted once the holder has
//     released the unit. A replica that fails to refresh a claim has lost it and stops
//     consuming that unit at once.
//
// A replica gives up a unit Assign moved elsewhere the way it stops on SIGTERM: it
// stops fetching, applies and acknowledges what it has fetched, unpins the durable and
// deletes the claim; the next holder, which retries its claim at every heartbeat and
// whenever a claim is deleted, starts then. So a partition never has two writers, as
// package consumer's pin.go requires on the FerretDB stand-in. A killed replica stops
// refreshing: its heartbeat and claims age out after MemberTTL, the pin of its
// durables after PinnedTTL, and what it had fetched without acknowledging comes back
// after AckWait (so AckWait is kept short; a batch held through an outage is kept
// alive with InProgress).
//
// Upgrade from the unpartitioned layout: the durable named Config.Durable, filtered on
// <prefix>.>, is the legacy unit. While it exists it is the only unit: one replica
// drains it (messages stored before the stream gained its transform keep their plain
// subjects, which no partition filter matches), deletes it once nothing is pending
// or unacknowledged and the stream is partitioned, and only then do the partitions
// start, so an owner's older events are applied before its newer ones. On a stream
// without the transform (a publisher not yet upgraded) the legacy durable is created
// and consumed as before, by one replica.
//
// Why not github.com/synadia-io/orbit.go/pcgroups (v0.2.2, evaluated): its static
// groups take a fixed member list (changing it means deleting and recreating the
// group) and its elastic groups an administrative AddMembers/DeleteMembers, with a
// second, work-queue stream sourced from ours; in both, a member's partitions go to
// another instance of the same member name only, so neither gives a dead replica's
// partitions to the other live replicas nor balances over whatever replicas a
// Deployment runs, and its consumption is a per-message callback, where the projector
// applies a fetched batch at once. Its failover timers also derive from AckWait.
// This package uses the same server features (partition transform, one durable per
// partition, pinned client) with a membership of its own.
package partition

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/consumer"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/metrics"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
)

// Config tunes a Group.
type Config struct {
	// Consumer is the template of every unit's consumer: Durable is the legacy durable
	// and the prefix of the partitions' (<durable>-p<i>); Durable, FilterSubjects,
	// PinnedTTL, Existing and StatsInterval are set per unit.
	Consumer      consumer.Config
	SubjectPrefix string
	// Member names this replica in the bucket; unique per process.
	Member string
	// Bucket is the KV bucket of heartbeats and claims.
	Bucket string
	// MemberTTL is how long a heartbeat or claim lives unrefreshed: the time a dead
	// replica's partitions wait before they move.
	MemberTTL time.Duration
	// StatsInterval is how often the consumer and dead-letter gauges are refreshed.
	StatsInterval time.Duration
}

// Group runs this replica's share of the partitions.
type Group struct {
	cfg     Config
	js      jetstream.JetStream
	store   *readmodel.Store
	metrics *metrics.Metrics
	log     *slog.Logger

	pipe    *consumer.Pipeline // shared by the units' consumers
	alive   atomic.Int64       // unix nanoseconds of the last successful heartbeat
	leaving atomic.Bool        // no more heartbeats: Run's context has ended
	mu      sync.Mutex
	held    map[string]*worker // the loop's workers, for Held and keep
}

// New builds a group; Run starts it.
func New(cfg Config, js jetstream.JetStream, store *readmodel.Store, m *metrics.Metrics, log *slog.Logger) *Group {
	log = log.With("member", cfg.Member)
	return &Group{cfg: cfg, pipe: consumer.NewPipeline(cfg.Consumer, store, m, log), js: js, store: store, metrics: m, log: log}
}

// Ready reports whether this replica is a live member: it holds partitions or is a
// standby ready to take some.
func (g *Group) Ready() bool {
	last := g.alive.Load()
	return last != 0 && time.Since(time.Unix(0, last)) < g.cfg.MemberTTL
}

// Held is the units this replica consumes: p<i> for partition i, legacy for the
// unpartitioned layout's durable.
func (g *Group) Held() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Sorted(maps.Keys(g.held))
}

// worker is one unit being consumed.
type worker struct {
	unit   string
	cancel context.CancelFunc
	done   chan struct{}
	rev    atomic.Uint64 // of the claim
	lost   atomic.Bool   // the claim is someone else's now: neither unpin nor delete it
	drop   atomic.Bool   // delete the durable once stopped (the drained legacy one)
	gone   atomic.Bool   // released: no more refreshes
	// releasing is set by the loop when it stops the worker.
	releasing bool
}

// state is the loop's view, owned by Run's goroutine.
type state struct {
	kv         jetstream.KeyValue
	members    map[string]time.Time // last heartbeat seen, by member
	workers    map[string]*worker
	partitions int
	legacy     bool // the legacy durable exists, or is needed (an unpartitioned stream)
	exited     chan *worker
}

// Run takes part in the group until ctx ends, then hands its units over: it deletes
// its heartbeat, lets every unit's consumer finish and acknowledge its batches (within
// the consumer's ShutdownTimeout), unpins the durables and deletes its claims.
func (g *Group) Run(ctx context.Context) error {
	// Stopped last, once leave has let every unit finish its batches through it.
	pipeCtx, stopPipe := context.WithCancel(context.WithoutCancel(ctx))
	pipeDone := make(chan error, 1)
	go func() { pipeDone <- g.pipe.Run(pipeCtx) }()
	defer func() {
		stopPipe()
		if err := <-pipeDone; err != nil {
			g.log.Error("pipeline stopped", "error", err)
		}
	}()
	st := &state{members: map[string]time.Time{}, workers: map[string]*worker{}, exited: make(chan *worker)}
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	updates := g.join(ctx, watchCtx, st)
	if updates == nil {
		return nil
	}
	statsCtx, stopStats := context.WithCancel(ctx)
	statsDone := make(chan struct{})
	go func() { defer close(statsDone); g.refreshGauges(statsCtx) }()
	defer func() { stopStats(); <-statsDone }()

	if joined, err := g.awaitMembers(ctx, st, updates); !joined {
		return err
	}
	// The claims are kept through leave, while the batches in hand finish: only then
	// may another replica take them.
	keepCtx, stopKeep := context.WithCancel(context.WithoutCancel(ctx))
	keepDone := make(chan struct{})
	go func() { defer close(keepDone); g.keep(keepCtx, st.kv) }()
	defer func() { stopKeep(); <-keepDone }()
	g.serve(ctx, watchCtx, st, updates)
	return nil
}

// join binds the membership bucket into st and watches it under watchCtx, retrying
// every second until both work; nil once ctx has ended.
func (g *Group) join(ctx, watchCtx context.Context, st *state) <-chan jetstream.KeyValueEntry {
	for {
		var err error
		if st.kv == nil {
			st.kv, err = g.bucket(ctx)
		}
		if err == nil {
			var updates <-chan jetstream.KeyValueEntry
			if updates, err = watch(watchCtx, st.kv); err == nil {
				return updates
			}
		}
		g.log.Warn("membership bucket not ready, retrying", "bucket", g.cfg.Bucket, "error", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// awaitMembers records the members already in the bucket, so that a replica joining
// a running group does not claim what belongs to others. It reports false when ctx
// ended first, or the watch did (the error, unless ctx has ended).
func (g *Group) awaitMembers(ctx context.Context, st *state, updates <-chan jetstream.KeyValueEntry) (bool, error) {
	for {
		select {
		case <-ctx.Done():
			return false, nil
		case e, ok := <-updates:
			if !ok {
				if ctx.Err() != nil {
					return false, nil
				}
				return false, fmt.Errorf("watch %s: ended before its initial values", g.cfg.Bucket)
			}
			g.observe(st, e)
			if e == nil {
				return true, nil
			}
		}
	}
}

// serve claims and releases units as members come and go, and surveys the layout
// every MemberTTL/3, until ctx ends; then it leaves. A watch that ends is watched
// again, under watchCtx, at the next survey.
func (g *Group) serve(ctx, watchCtx context.Context, st *state, updates <-chan jetstream.KeyValueEntry) {
	tick := time.NewTicker(g.cfg.MemberTTL / 3)
	defer tick.Stop()
	g.survey(ctx, st)
	for {
		select {
		case <-ctx.Done():
			g.leave(st)
			return
		case w := <-st.exited:
			delete(st.workers, w.unit)
			g.publishHeld(st)
			g.reconcile(ctx, st)
		case e, ok := <-updates:
			switch {
			case !ok:
				// The watch ended (its connection closed): watched again at the next tick.
				updates = nil
			case g.observe(st, e):
				g.reconcile(ctx, st)
			}
		case <-tick.C:
			if updates == nil {
				var err error
				if updates, err = watch(watchCtx, st.kv); err != nil {
					g.log.Warn("membership not watched, retrying", "bucket", g.cfg.Bucket, "error", err)
				}
			}
			g.survey(ctx, st)
		}
	}
}

// bucket creates or binds the membership bucket, with as many replicas as the stream,
// on file so that a claim outlives a restart of the NATS server.
func (g *Group) bucket(ctx context.Context) (jetstream.KeyValue, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := g.js.Stream(ctx, g.cfg.Consumer.Stream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", g.cfg.Consumer.Stream, err)
	}
	return g.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      g.cfg.Bucket,
		Description: "Projector replicas (m.<member>) and who consumes which partition (c.<unit>)",
		TTL:         g.cfg.MemberTTL,
		Storage:     jetstream.FileStorage,
		Replicas:    s.CachedInfo().Config.Replicas,
	})
}

// watch follows every key of the bucket: its current values, a nil entry, then each
// change.
func watch(ctx context.Context, kv jetstream.KeyValue) (<-chan jetstream.KeyValueEntry, error) {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", kv.Bucket(), err)
	}
	return w.Updates(), nil
}

// observe records a bucket change and reports whether the assignment may have
// changed: a member joined or left, or a claim was given up.
func (g *Group) observe(st *state, e jetstream.KeyValueEntry) bool {
	if e == nil { // the end of the initial values
		return true
	}
	gone := e.Operation() == jetstream.KeyValueDelete || e.Operation() == jetstream.KeyValuePurge
	if name, ok := strings.CutPrefix(e.Key(), "m."); ok {
		_, known := st.members[name]
		if gone {
			delete(st.members, name)
			return known
		}
		st.members[name] = time.Now()
		return !known
	}
	return gone && strings.HasPrefix(e.Key(), "c.")
}

// keep refreshes this member's heartbeat and its claims every MemberTTL/3 until ctx
// ends, on a goroutine of its own: a slow claim or layout read in Run's loop must not
// let them age out. A claim found lost stops its worker at once.
func (g *Group) keep(ctx context.Context, kv jetstream.KeyValue) {
	t := time.NewTicker(g.cfg.MemberTTL / 3)
	defer t.Stop()
	for {
		g.beat(ctx, kv)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (g *Group) beat(ctx context.Context, kv jetstream.KeyValue) {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.MemberTTL)
	defer cancel()
	g.mu.Lock()
	workers := slices.Collect(maps.Values(g.held))
	g.mu.Unlock()
	var wg sync.WaitGroup
	for _, w := range workers {
		if w.lost.Load() || w.gone.Load() {
			continue
		}
		wg.Go(func() {
			lost, err := g.refresh(ctx, kv, w)
			switch {
			case lost:
				g.log.Warn("claim lost, stopping", "unit", w.unit, "error", err)
				w.lost.Store(true)
				w.cancel()
			case err != nil:
				// Unknown (NATS unreachable): the claim lives MemberTTL; retried at the next beat.
				g.log.Warn("claim not refreshed", "unit", w.unit, "error", err)
			}
		})
	}
	if !g.leaving.Load() {
		if _, err := kv.Put(ctx, "m."+g.cfg.Member, []byte(time.Now().UTC().Format(time.RFC3339Nano))); err != nil {
			g.log.Warn("heartbeat failed", "error", err)
		} else {
			g.alive.Store(time.Now().UnixNano())
		}
	}
	wg.Wait()
}

// survey rereads the stream's layout, retires the drained legacy durable and
// reconciles.
func (g *Group) survey(runCtx context.Context, st *state) {
	ctx, cancel := context.WithTimeout(runCtx, g.cfg.MemberTTL)
	defer cancel()
	st.members[g.cfg.Member] = time.Now()
	if err := g.readLayout(ctx, st); err != nil {
		g.log.Warn("stream layout not read", "error", err)
		return
	}
	g.reconcile(runCtx, st)
}

// refresh renews w's claim on its revision. A revision of its own that it did not
// know of (a refresh that timed out but went through) is taken over; a claim that
// aged out or that another member holds is lost.
func (g *Group) refresh(ctx context.Context, kv jetstream.KeyValue, w *worker) (lost bool, _ error) {
	key := "c." + w.unit
	rev, err := kv.Update(ctx, key, []byte(g.cfg.Member), w.rev.Load())
	if err == nil {
		w.rev.Store(rev)
		return false, nil
	}
	if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return false, err
	}
	e, gerr := kv.Get(ctx, key)
	switch {
	case gerr == nil && string(e.Value()) == g.cfg.Member:
		w.rev.Store(e.Revision())
		return false, nil
	case gerr == nil, errors.Is(gerr, jetstream.ErrKeyNotFound), errors.Is(gerr, jetstream.ErrKeyDeleted):
		return true, err
	}
	return false, gerr
}

// claim creates the claim of unit, or finds it already this member's (a create that
// timed out but went through).
func (g *Group) claim(ctx context.Context, kv jetstream.KeyValue, unit string) (rev uint64, ok bool, _ error) {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.MemberTTL)
	defer cancel()
	rev, err := kv.Create(ctx, "c."+unit, []byte(g.cfg.Member))
	if err == nil {
		return rev, true, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return 0, false, err
	}
	if e, gerr := kv.Get(ctx, "c."+unit); gerr == nil && string(e.Value()) == g.cfg.Member {
		return e.Revision(), true, nil
	}
	return 0, false, nil // its holder is releasing it, or is dead and its claim ages out
}

// readLayout reads the partition count and whether the legacy durable still has work,
// and stops the legacy unit here once it is drained (its worker deletes it).
func (g *Group) readLayout(ctx context.Context, st *state) error {
	s, err := g.js.Stream(ctx, g.cfg.Consumer.Stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", g.cfg.Consumer.Stream, err)
	}
	st.partitions = event.Partitions(s.CachedInfo().Config, g.cfg.SubjectPrefix)
	if st.partitions == 0 {
		st.legacy = true
		return nil
	}
	info, err := s.Consumer(ctx, g.cfg.Consumer.Durable)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		st.legacy = false
		return nil
	case err != nil:
		return fmt.Errorf("legacy consumer %s: %w", g.cfg.Consumer.Durable, err)
	}
	st.legacy = true
	ci := info.CachedInfo()
	if w := st.workers[event.LegacyUnit]; w != nil && !w.releasing && ci.NumPending == 0 && ci.NumAckPending == 0 {
		g.log.Info("legacy consumer drained: deleting it; the partitions start next", "consumer", g.cfg.Consumer.Durable)
		w.drop.Store(true)
		g.stop(w)
	}
	return nil
}

// units are what the replicas share now.
func (st *state) units() []string {
	if st.legacy || st.partitions == 0 {
		return []string{event.LegacyUnit}
	}
	out := make([]string, st.partitions)
	for i := range out {
		out[i] = fmt.Sprintf("p%d", i)
	}
	return out
}

// reconcile stops the units no longer this member's and claims those that are.
func (g *Group) reconcile(ctx context.Context, st *state) {
	if st.partitions == 0 && !st.legacy {
		return // the layout is not read yet
	}
	live := make([]string, 0, len(st.members))
	for m, seen := range st.members {
		switch {
		case time.Since(seen) < g.cfg.MemberTTL || m == g.cfg.Member:
			live = append(live, m)
		default:
			delete(st.members, m) // dead: its heartbeat aged out unseen
		}
	}
	mine := map[string]bool{}
	for u, m := range Assign(st.units(), live) {
		mine[u] = m == g.cfg.Member
	}
	for u, w := range st.workers {
		if !mine[u] && !w.releasing {
			g.stop(w)
		}
	}
	for _, u := range slices.Sorted(maps.Keys(mine)) {
		if !mine[u] || st.workers[u] != nil {
			continue
		}
		rev, ok, err := g.claim(ctx, st.kv, u)
		if err != nil {
			g.log.Warn("claim failed", "unit", u, "error", err)
		}
		if ok {
			g.start(ctx, st, u, rev)
		}
	}
	g.publishHeld(st)
}

func (g *Group) publishHeld(st *state) {
	g.mu.Lock()
	g.held = maps.Clone(st.workers)
	g.mu.Unlock()
	g.metrics.PartitionsHeld.Set(float64(len(st.workers)))
}

// start runs unit's consumer until the worker is stopped, then releases the unit.
func (g *Group) start(ctx context.Context, st *state, unit string, rev uint64) {
	cc := g.cfg.Consumer
	cc.StatsInterval = 0 // summed over the units by refreshGauges
	cc.PinnedTTL = g.cfg.MemberTTL
	cc.Pipeline = g.pipe
	if unit == event.LegacyUnit {
		cc.FilterSubjects = []string{event.StreamSubjects(g.cfg.SubjectPrefix)}
		// Once the stream is partitioned the legacy durable only drains: never recreate
		// one that was deleted meanwhile.
		cc.Existing = st.partitions > 0
	} else {
		var p int
		_, _ = fmt.Sscanf(unit, "p%d", &p)
		cc.Durable = event.PartitionDurable(cc.Durable, p)
		cc.FilterSubjects = []string{event.PartitionFilter(g.cfg.SubjectPrefix, p)}
	}
	wctx, cancel := context.WithCancel(ctx)
	w := &worker{unit: unit, cancel: cancel, done: make(chan struct{})}
	w.rev.Store(rev)
	st.workers[unit] = w
	g.log.Info("consuming", "unit", unit, "consumer", cc.Durable)
	c := consumer.New(cc, g.js, g.store, g.metrics, g.log.With("unit", unit))
	exited := st.exited
	go func() {
		defer close(w.done)
		if err := c.Run(wctx); err != nil {
			g.log.Error("consumer stopped", "unit", unit, "error", err)
		}
		g.release(w, cc.Stream, cc.Durable)
		select {
		case exited <- w:
		case <-ctx.Done(): // leave waits on done instead
		}
	}()
}

// stop makes w's consumer stop fetching and finish; its goroutine releases the unit.
func (g *Group) stop(w *worker) {
	w.releasing = true
	w.cancel()
}

// releaseTimeout bounds the calls that hand a unit over.
const releaseTimeout = 5 * time.Second

// release hands a stopped unit over: it deletes the drained legacy durable, unpins
// the durable so that the next holder's pulls are answered now rather than after
// PinnedTTL, and deletes the claim (on its revision: never someone else's).
func (g *Group) release(w *worker, stream, durable string) {
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	if w.lost.Load() {
		return
	}
	if w.drop.Load() {
		if err := g.js.DeleteConsumer(ctx, stream, durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			g.log.Warn("legacy consumer not deleted", "consumer", durable, "error", err)
		}
	} else if s, err := g.js.Stream(ctx, stream); err == nil {
		if err := s.UnpinConsumer(ctx, durable, consumer.PinGroup); err != nil {
			g.log.Debug("unpin failed", "consumer", durable, "error", err)
		}
	}
	w.gone.Store(true)
	kv, err := g.js.KeyValue(ctx, g.cfg.Bucket)
	if err == nil {
		err = kv.Delete(ctx, "c."+w.unit, jetstream.LastRevision(w.rev.Load()))
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			// A refresh was in flight: delete its revision if the claim is still ours.
			if e, gerr := kv.Get(ctx, "c."+w.unit); gerr == nil && string(e.Value()) == g.cfg.Member {
				err = kv.Delete(ctx, "c."+w.unit, jetstream.LastRevision(e.Revision()))
			}
		}
	}
	if err != nil {
		g.log.Warn("claim not deleted: it ages out", "unit", w.unit, "error", err)
	}
	g.log.Info("released", "unit", w.unit)
}

// leave ends membership: the heartbeat goes first, so that the others reassign at
// once, then every unit is stopped and released.
func (g *Group) leave(st *state) {
	g.leaving.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	if err := st.kv.Delete(ctx, "m."+g.cfg.Member); err != nil {
		g.log.Warn("heartbeat not deleted: it ages out", "error", err)
	}
	cancel()
	g.alive.Store(0)
	for _, w := range st.workers {
		if !w.releasing {
			g.stop(w)
		}
	}
	for _, w := range st.workers {
		<-w.done
	}
	clear(st.workers)
	g.publishHeld(st)
}
