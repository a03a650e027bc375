package consumer

import (
	"context"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/metrics"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/project"
	"github.com/outboxtodo/outboxtodo/shared/event"
)

// job is one event queued for a batch, and its outcome once the batch is done.
type job struct {
	d *delivery
	// key is the durable the event came from: no two batches in flight hold events of
	// one durable (see batcher).
	key  string
	res  result
	done chan struct{}
}

// result is what a batch did with one job's event.
type result struct {
	err      error // nil: applied or stale
	rejected bool  // err is MongoDB refusing this write (see isRejected)
	panicked any   // the batch panicked: its handlers re-panic with this
}

// applyingBatches is how many batches are applied at once. Each runs up to
// Concurrency writes; two keep one batch's writes going while the other's slowest
// writes finish. Jobs queued meanwhile wait for a slot, so that under load a batch
// takes everything that accumulated: its fixed writes (stats, watermark) are paid once
// for many events.
const applyingBatches = 2

// batcher applies queued jobs in batches, applyingBatches at a time. A batch takes
// every queued job whose durable has no batch in flight: a durable's events (one
// partition's, so one owner's and one aggregate's) are never written by two batches
// at once, which the FerretDB stand-in needs (see PinGroup), and they are applied in
// the order they were queued.
type batcher struct {
	apply   func(context.Context, []*job)
	mu      sync.Mutex
	pending []*job
	busy    map[string]bool // the durables of the batches in flight
	running int
	wake    chan struct{}
}

func newBatcher(apply func(context.Context, []*job)) *batcher {
	return &batcher{apply: apply, busy: map[string]bool{}, wake: make(chan struct{}, 1)}
}

func (b *batcher) signal() {
	select {
	case b.wake <- struct{}{}:
	default: // a wake-up is already due
	}
}

// do queues d's event and waits for its result, or for ctx. A job still queued when
// ctx ends is withdrawn; one already in a batch is left to it, its result dropped
// (the write is idempotent: a retry of it is skipped as stale).
func (b *batcher) do(ctx context.Context, d *delivery) (result, error) {
	j := &job{d: d, key: d.md.Consumer, done: make(chan struct{})}
	b.mu.Lock()
	b.pending = append(b.pending, j)
	b.mu.Unlock()
	d.markQueued()
	b.signal()
	select {
	case <-j.done:
		return j.res, nil
	case <-ctx.Done():
		b.mu.Lock()
		if i := slices.Index(b.pending, j); i >= 0 {
			b.pending = slices.Delete(b.pending, i, i+1)
		}
		b.mu.Unlock()
		return result{}, ctx.Err()
	}
}

// run applies batches until ctx ends, and returns once those in flight are done.
// Jobs still queued then belong to handlers whose own contexts end with the same
// shutdown.
func (b *batcher) run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.wake:
		}
		for jobs := b.take(); jobs != nil; jobs = b.take() {
			wg.Go(func() {
				b.apply(ctx, jobs)
				b.finish(jobs)
			})
		}
	}
}

// take starts a batch if a slot is free and some queued job's durable is idle.
func (b *batcher) take() []*job {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.running >= applyingBatches {
		return nil
	}
	var jobs, rest []*job
	for _, j := range b.pending {
		if b.busy[j.key] {
			rest = append(rest, j)
		} else {
			jobs = append(jobs, j)
		}
	}
	if len(jobs) == 0 {
		return nil
	}
	for _, j := range jobs {
		b.busy[j.key] = true
	}
	b.pending = rest
	b.running++
	return jobs
}

func (b *batcher) finish(jobs []*job) {
	b.mu.Lock()
	for _, j := range jobs {
		delete(b.busy, j.key)
	}
	b.running--
	b.mu.Unlock()
	b.signal()
}

// applyBatch applies jobs once under a WriteTimeout of its own and gives each its
// result: applied or stale, rejected, or transient (an outage, a timeout). A panic is
// handed to every job not yet given its result, for its handler to re-panic with.
func (p *Pipeline) applyBatch(ctx context.Context, jobs []*job) {
	given := 0
	defer func() {
		if v := recover(); v != nil {
			for _, j := range jobs[given:] {
				j.res = result{panicked: v}
				close(j.done)
			}
		}
	}()
	wctx, cancel := context.WithTimeout(ctx, p.cfg.WriteTimeout)
	defer cancel()
	db, err := p.database(wctx)
	var proj *project.Projector
	if err == nil {
		proj, err = p.projector(wctx, db)
	}
	if err != nil {
		p.metrics.Events.WithLabelValues(metrics.OutcomeFailed).Add(float64(len(jobs)))
		p.log.Warn("read model unavailable, retrying", "error", err, "messages", len(jobs))
		for _, j := range jobs {
			j.res = result{err: err}
			close(j.done)
			given++
		}
		return
	}
	events := make([]event.Envelope, len(jobs))
	for i, j := range jobs {
		events[i] = j.d.event
	}
	spans := p.startApplySpans(ctx, jobs)
	results := proj.Apply(wctx, events)
	appliedAt := time.Now() // before the outage probe, which would add to the lag
	// Rejections during an outage of the read model's own backend are transient.
	out := p.judge(ctx, jobs, spans, results, appliedAt, readModelDown(wctx, db, results))
	if p.cfg.Applied != nil && len(out.ok) > 0 {
		p.cfg.Applied(out.ok)
	}
	for i, j := range jobs {
		j.res = out.res[i]
		close(j.done)
		given++
	}
	if out.maxSeq > 0 {
		// The watermark is informational: a failure to move it must not hold back acks,
		// which is why it comes after the results.
		if err := proj.AdvanceWatermark(wctx, out.maxSeq, out.occurred); err != nil {
			p.log.Warn("watermark not advanced", "error", err)
		}
	}
}

// judged is what a batch's writes came to.
type judged struct {
	res []result  // each job's, in the batch's order
	ok  []Applied // the events applied or stale
	// maxSeq is the newest of those, and occurred its event's time: where the
	// watermark moves to.
	maxSeq   uint64
	occurred time.Time
}

// judge gives each job its result from its write's, counts it in the metrics (the
// lag as of appliedAt) and ends its span. down makes every failed write transient, a
// rejection included.
func (p *Pipeline) judge(ctx context.Context, jobs []*job, spans []trace.Span, results []project.Result, appliedAt time.Time, down bool) judged {
	var (
		out       = judged{res: make([]result, len(jobs))}
		transient int
		lastErr   error
	)
	for i, r := range results {
		j := jobs[i]
		p.endApplySpan(ctx, spans[i], j, r)
		switch {
		case r.Err == nil:
			out.ok = append(out.ok, Applied{StreamSeq: j.d.md.Sequence.Stream, Delivery: j.d.md.NumDelivered, Subject: j.d.msg.Subject(), Event: j.d.event})
			if r.Outcome == project.Applied {
				p.metrics.Events.WithLabelValues(metrics.OutcomeApplied).Inc()
				p.metrics.Lag.Observe(appliedAt.Sub(j.d.event.OccurredAt).Seconds())
			} else {
				p.metrics.Events.WithLabelValues(metrics.OutcomeStale).Inc()
			}
			if j.d.md.Sequence.Stream > out.maxSeq {
				out.maxSeq, out.occurred = j.d.md.Sequence.Stream, j.d.event.OccurredAt
			}
		case isRejected(r.Err) && !down:
			p.metrics.Events.WithLabelValues(metrics.OutcomeFailed).Inc()
			p.log.Warn("write rejected", "stream_seq", j.d.md.Sequence.Stream, "request_id", j.d.requestID,
				"delivery", j.d.md.NumDelivered, "error", r.Err)
			out.res[i] = result{err: r.Err, rejected: true}
		default:
			p.metrics.Events.WithLabelValues(metrics.OutcomeFailed).Inc()
			out.res[i] = result{err: r.Err}
			transient++
			lastErr = r.Err
		}
	}
	if transient > 0 && ctx.Err() == nil {
		p.log.Warn("read model unavailable, retrying", "error", lastErr, "messages", transient)
	}
	return out
}
