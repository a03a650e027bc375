// Package relay drains the outbox into JetStream: it claims the unpublished rows of the
// partitions this replica leases, publishes them asynchronously with the event id as
// Nats-Msg-Id, waits for every PubAck and marks the acknowledged rows published in one
// statement fenced on the lease. Under a backlog the three steps overlap across
// batches (see Relay.Drain).
//
// Delivery is at least once: a crash between the PubAck and the mark leaves the rows
// unpublished, they are published again, and JetStream drops the copies inside its
// duplicate window (see config.Config.MaxRepublishDelay for why the window covers it).
//
// Order: an aggregate's version N+1 never reaches the stream before N. One replica
// drains a partition at a time (package lease), and it has at most one unacknowledged
// publish per aggregate: a row is claimed only once every lower version of its
// aggregate is published or acknowledged (see outboxdb.Claim), so a batch holds at most one
// row per aggregate and the next version goes in a batch sent after that PubAck came
// back. A failed publish (refused, timed out, lost with the connection, in backoff,
// parked) holds back the later versions of its aggregate until it succeeds, without
// holding up other aggregates. The order is by version, not by created_at, which is
// the writing API replica's clock: with clocks skewed between replicas a later version
// can carry an earlier time.
//
// Why this rather than the alternatives: pipelining N and N+1 on one subject cannot be
// made safe, because an asynchronous PubAck error for N comes back after N+1 may be
// stored. Nats-Expected-Last-Subject-Sequence would have the broker refuse N+1 without
// N, but it needs N's stream sequence, known only from N's PubAck: the same wait, plus
// a lookup of the subject's last sequence for each aggregate's first message of a
// drain. Waiting per aggregate costs nothing where batches hold one row per aggregate
// (the usual case: many users, many todos); an aggregate with a backlog of versions
// drains at most one version per batch, which bounds a partition set with fewer busy
// aggregates than BatchSize to one batch per PubAck round trip.
package relay

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/outboxtodo/outboxtodo/services/publisher/internal/lease"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/metrics"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/outboxdb"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/telemetry"
)

// Message headers besides Nats-Msg-Id. Consumers may filter or trace on them without
// decoding the body.
const (
	HeaderEventType        = "Event-Type"
	HeaderAggregateVersion = "Aggregate-Version"
	HeaderTraceParent      = "traceparent"
	HeaderTraceState       = "tracestate"
)

// Options tune the relay; config.Config supplies them.
type Options struct {
	SubjectPrefix  string
	BatchSize      int
	PublishTimeout time.Duration
	PollMin        time.Duration
	PollMax        time.Duration
	MaxAttempts    int
	BackoffMin     time.Duration
	BackoffMax     time.Duration
	// ShutdownGrace is how long the batch in flight may finish after Run's context is
	// cancelled; past it the batch is abandoned (and republished later, deduplicated).
	ShutdownGrace time.Duration
	// Tracer starts a span per published event, a child of the event's traceparent;
	// nil traces nothing.
	Tracer trace.Tracer
	// Idler hears how many rows each drain claimed (wake.Flag: it tells writers
	// whether to notify); nil: nobody.
	Idler Idler
}

// Idler is told the outcome of every successful drain. When it answers true the relay
// drains again at once instead of sleeping.
type Idler interface {
	Drained(ctx context.Context, claimed int) (again bool)
}

// Leases is what the relay needs from the lease manager.
type Leases interface {
	Owner() string
	Held() lease.Held
	Acquired() <-chan struct{}
}

// Relay drains the outbox partitions its replica leases.
type Relay struct {
	pool   *pgxpool.Pool
	js     jetstream.JetStream
	leases Leases
	wake   <-chan struct{}
	opts   Options
	m      *metrics.Metrics
	log    *slog.Logger

	// Test seams that run real interruptions (stopping a server, closing a pool) at a
	// precise point of a drain; nil in production.
	afterSend func() // every message of the batch sent, PubAcks not yet awaited
	afterAcks func() // every PubAck awaited, rows not yet marked
}

// New returns a relay. wake delivers notifications of new rows; nil polls only.
func New(pool *pgxpool.Pool, js jetstream.JetStream, leases Leases, wake <-chan struct{}, opts Options, m *metrics.Metrics, log *slog.Logger) *Relay {
	if opts.Tracer == nil {
		opts.Tracer = noop.NewTracerProvider().Tracer("")
	}
	return &Relay{pool: pool, js: js, leases: leases, wake: wake, opts: opts, m: m, log: log}
}

// Run drains until ctx is cancelled: a drain goes on while batches come back full, the
// next one starts after PollMin while there is work, and after a delay doubling up to
// PollMax while idle, or as soon as a notification or a new lease arrives. A failing
// drain (broker or database down) is logged and retried with the same growing delay.
// It returns nil on cancellation, after finishing or abandoning the batches in flight.
func (r *Relay) Run(ctx context.Context) error {
	idle := r.opts.PollMin
	for {
		res, err := r.drainGraceful(ctx)
		if ctx.Err() != nil {
			return nil
		}
		var delay time.Duration
		switch {
		case err != nil:
			r.log.Warn("drain failed", "error", err, "retry_in", idle)
			delay, idle = idle, min(2*idle, r.opts.PollMax)
		case res.Claimed > 0:
			delay, idle = r.opts.PollMin, r.opts.PollMin
		default:
			delay, idle = idle, min(2*idle, r.opts.PollMax)
		}
		if err == nil && r.opts.Idler != nil && r.opts.Idler.Drained(ctx, res.Claimed) {
			continue
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		case <-r.wake:
			t.Stop()
			idle = r.opts.PollMin
		case <-r.leases.Acquired():
			t.Stop()
		}
	}
}

// drainGraceful runs one drain whose batches in flight survive the cancellation of ctx
// for ShutdownGrace; it claims no new batch after ctx is cancelled.
func (r *Relay) drainGraceful(ctx context.Context) (Result, error) {
	bctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(r.opts.ShutdownGrace, cancel)
		context.AfterFunc(bctx, func() { t.Stop() })
	})
	defer stop()
	return r.drain(bctx, ctx.Done())
}

// Result counts what one drain did.
type Result struct {
	Claimed   int // rows read
	Published int // rows acknowledged and marked published
	Fenced    int // rows acknowledged but not marked: the lease was lost meanwhile
	Failed    int // rows whose publish failed (broker or event)
	Parked    int // rows parked by this drain
}

func (res *Result) add(o Result) {
	res.Claimed += o.Claimed
	res.Published += o.Published
	res.Fenced += o.Fenced
	res.Failed += o.Failed
	res.Parked += o.Parked
}

// batch is one claimed batch after its publish, waiting to be marked.
type batch struct {
	rows  []outboxdb.Row
	acked []outboxdb.Row
	// errs holds each failed row's error, by index in rows; acknowledged rows have none.
	errs   []error
	failed bool
}

// Drain publishes the leased partitions' unpublished rows in batches of BatchSize, back
// to back while the batches come back full, and returns when one comes back short, on
// the first error, or once ctx is cancelled. It returns an error when a batch could not
// be claimed or marked, or when the broker failed (connection lost, timeouts): those
// rows stay as they are and are retried without counting against them. Rows the broker
// rejected on their own count an attempt each.
//
// While a batch is published, the previous one is marked and the next one claimed, so
// that the two statements cost no time beyond the broker's round trips. The order rules
// hold as without the overlap: a batch is published only after every PubAck of the one
// before came back; a claim skips the rows of the batches still in flight (unpublished
// in the database until their mark commits), counts those of the acknowledged batch as
// published and holds back the later versions of the batch being sent; and after a
// batch with a failed row the next claim is discarded, the failures are recorded, and
// the claim is made again. If a mark fails, the batch published meanwhile is left
// unmarked too, so that both are republished later in version order, and
// deduplicated.
func (r *Relay) Drain(ctx context.Context) (Result, error) { return r.drain(ctx, ctx.Done()) }

// drain is Drain with the batches' work under ctx, claiming no new batch once stop is
// closed.
func (r *Relay) drain(ctx context.Context, stop <-chan struct{}) (Result, error) {
	var (
		total   Result
		marking *task[Result]  // the previous batch's finish, running
		marked  []outboxdb.Row // its rows
	)
	// settle waits for the tasks in flight, so that none outlives the drain.
	settle := func(claiming *task[[]outboxdb.Row]) error {
		var err error
		if claiming != nil {
			_, _ = claiming.wait() // discarded: claiming takes no locks
		}
		if marking != nil {
			var res Result
			res, err = marking.wait()
			total.add(res)
			marking = nil
		}
		return err
	}

	rows, err := r.claim(ctx, nil, nil)
	for {
		if err != nil || len(rows) == 0 || closed(stop) {
			return total, errors.Join(err, settle(nil))
		}
		total.Claimed += len(rows)
		more := len(rows) == r.opts.BatchSize && !closed(stop)
		var claiming *task[[]outboxdb.Row]
		if more {
			acked, sent := marked, rows
			claiming = goTask(func() ([]outboxdb.Row, error) { return r.claim(ctx, acked, sent) })
		}
		b, perr := r.publish(ctx, rows)
		if ferr := settle(nil); ferr != nil || perr != nil {
			return total, errors.Join(ferr, perr, settle(claiming))
		}
		if !more || b.failed {
			_ = settle(claiming)
			res, ferr := r.finish(ctx, b)
			total.add(res)
			if ferr != nil || !more {
				return total, ferr
			}
			rows, err = r.claim(ctx, nil, nil)
			continue
		}
		marking, marked = goTask(func() (Result, error) { return r.finish(ctx, b) }), b.acked
		rows, err = claiming.wait()
	}
}

// closed reports whether c is closed.
func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// claim reads the next batch of the partitions held now, skipping the rows of acked
// and sent, and holding back the later versions of sent's aggregates (see
// outboxdb.Claim).
func (r *Relay) claim(ctx context.Context, acked, sent []outboxdb.Row) ([]outboxdb.Row, error) {
	held := r.leases.Held()
	if len(held) == 0 {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.PublishTimeout)
	defer cancel()
	return outboxdb.Claim(ctx, r.pool, held, r.opts.BatchSize, acked, sent)
}

// markPublished returns how many of rows it marked; the others were fenced off.
func (r *Relay) markPublished(ctx context.Context, rows []outboxdb.Row) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.PublishTimeout)
	defer cancel()
	return outboxdb.MarkPublished(ctx, r.pool, rows, r.leases.Owner())
}

// recordFailures counts a failed attempt on each row, with its backoff, and returns
// how many rows it parked.
func (r *Relay) recordFailures(ctx context.Context, rows []outboxdb.Row, errs []string) (int, error) {
	delays := make([]time.Duration, len(rows))
	for i, rw := range rows {
		delays[i] = r.backoff(rw.Attempts)
		if len(errs[i]) > 1000 {
			errs[i] = errs[i][:1000]
		}
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.PublishTimeout)
	defer cancel()
	return outboxdb.RecordFailures(ctx, r.pool, rows, errs, delays, r.opts.MaxAttempts, r.leases.Owner())
}

// task is a function running in its own goroutine; its starter owns it and must wait.
type task[T any] struct {
	done chan struct{}
	v    T
	err  error
}

func goTask[T any](f func() (T, error)) *task[T] {
	t := &task[T]{done: make(chan struct{})}
	go func() {
		defer close(t.done)
		t.v, t.err = f()
	}()
	return t
}

func (t *task[T]) wait() (T, error) {
	<-t.done
	return t.v, t.err
}

// publish publishes a claimed batch, at most one row per aggregate (see outboxdb.Claim), and
// waits for its PubAcks. It returns an error when the batch was abandoned before every
// PubAck came back; a failed row is not an error, it is in the batch.
func (r *Relay) publish(ctx context.Context, rows []outboxdb.Row) (*batch, error) {
	r.m.BatchSize.Observe(float64(len(rows)))
	b := &batch{rows: rows, acked: make([]outboxdb.Row, 0, len(rows)), errs: make([]error, len(rows))}

	start := time.Now()
	futures := make([]jetstream.PubAckFuture, len(rows))
	spans := make([]trace.Span, len(rows))
	acked := make([]bool, len(rows))
	// Every span started ends here, with the row's outcome.
	defer func() {
		for i, sp := range spans {
			switch {
			case sp == nil:
				continue
			case b.errs[i] != nil:
				sp.RecordError(b.errs[i])
				sp.SetStatus(codes.Error, "publish failed")
			case !acked[i]:
				sp.SetStatus(codes.Error, "abandoned before the PubAck")
			}
			sp.End()
		}
	}()
	for i, rw := range rows {
		var msg *nats.Msg
		spans[i], msg = r.traced(ctx, rw)
		futures[i], b.errs[i] = r.js.PublishMsgAsync(msg)
	}
	if r.afterSend != nil {
		r.afterSend()
	}

	// Await every PubAck against one deadline for the batch.
	timer := time.NewTimer(r.opts.PublishTimeout)
	defer timer.Stop()
	timedOut := false
	for i, f := range futures {
		if f == nil {
			continue
		}
		if timedOut {
			b.errs[i] = fmt.Errorf("no PubAck within %s", r.opts.PublishTimeout)
			continue
		}
		select {
		case <-f.Ok():
			b.acked = append(b.acked, rows[i])
			acked[i] = true
		case err := <-f.Err():
			b.errs[i] = err
		case <-timer.C:
			timedOut = true
			b.errs[i] = fmt.Errorf("no PubAck within %s", r.opts.PublishTimeout)
		case <-ctx.Done():
			return b, fmt.Errorf("batch abandoned before every PubAck: %w", ctx.Err())
		}
	}
	r.m.PublishTime.Observe(time.Since(start).Seconds())
	b.failed = len(b.acked) < len(rows)
	now := time.Now()
	for _, rw := range b.acked {
		r.m.EventLag.Observe(now.Sub(rw.CreatedAt).Seconds())
	}
	if r.log.Enabled(ctx, slog.LevelDebug) {
		for i, sp := range spans {
			if acked[i] {
				r.log.LogAttrs(ctx, slog.LevelDebug, "event published", rowAttrs(ctx, rows[i], sp)...)
			}
		}
	}
	if r.afterAcks != nil {
		r.afterAcks()
	}
	return b, nil
}

// finish marks the batch's acknowledged rows published and records its failures. Its
// Result leaves Claimed to the caller.
func (r *Relay) finish(ctx context.Context, b *batch) (Result, error) {
	var res Result
	marked, err := r.markPublished(ctx, b.acked)
	if err != nil {
		return res, err
	}
	res.Published, res.Fenced = marked, len(b.acked)-marked
	r.m.Published.Add(float64(res.Published))
	if res.Fenced > 0 {
		r.m.Fenced.Add(float64(res.Fenced))
		r.log.Warn("lease lost during the batch: acknowledged rows left to the new owner", "rows", res.Fenced)
	}
	if !b.failed {
		return res, nil
	}

	var rejected []outboxdb.Row
	var rejectedErrs []string
	var brokerErr error
	var brokerReqIDs []string
	for i, err := range b.errs {
		if err == nil {
			continue
		}
		res.Failed++
		if !rejectedByBroker(err) {
			r.m.Failed.WithLabelValues("broker").Inc()
			brokerErr = cmp.Or(brokerErr, err)
			// One line per batch, not per row: an outage fails every row of every batch.
			if len(brokerReqIDs) < 20 {
				brokerReqIDs = append(brokerReqIDs, deref(b.rows[i].RequestID))
			}
			continue
		}
		r.log.LogAttrs(ctx, slog.LevelWarn, "broker rejected event", append(rowAttrs(ctx, b.rows[i], nil), slog.Any("error", err))...)
		r.m.Failed.WithLabelValues("event").Inc()
		rejected = append(rejected, b.rows[i])
		rejectedErrs = append(rejectedErrs, err.Error())
	}
	if len(rejected) > 0 {
		parked, err := r.recordFailures(ctx, rejected, rejectedErrs)
		if err != nil {
			return res, err
		}
		res.Parked = parked
		r.m.Parked.Add(float64(parked))
		r.log.Warn("broker rejected events", "rows", len(rejected), "parked", parked, "first_error", rejectedErrs[0])
	}
	if brokerErr != nil {
		r.log.Warn("publish failed, rows left for the next drain", "rows", res.Failed-len(rejected),
			"request_ids", brokerReqIDs, "error", brokerErr)
		return res, fmt.Errorf("publish %d of %d rows failed: %w", res.Failed-len(rejected), len(b.rows), brokerErr)
	}
	return res, nil
}

// traced starts the publish span of rw, a child of the trace context the API stored
// in the event, and returns it with the message, whose traceparent is the span's own:
// the projector's span then hangs below the publish. Without a valid stored context
// the span starts a trace of its own.
func (r *Relay) traced(ctx context.Context, rw outboxdb.Row) (trace.Span, *nats.Msg) {
	parent := telemetry.Extract(context.WithoutCancel(ctx), deref(rw.TraceParent), deref(rw.TraceState))
	sctx, span := r.opts.Tracer.Start(parent, "publish "+rw.EventType, trace.WithSpanKind(trace.SpanKindProducer))
	// With tracing off (a no-op span carrying the stored context) the attributes and a
	// traceparent rendered again change nothing, and cost 8 of a row's 35 allocations.
	if span.IsRecording() {
		span.SetAttributes(
			attribute.String("messaging.system", "nats"),
			attribute.String("messaging.message.id", rw.EventID.String()),
			attribute.String("outbox.aggregate_type", rw.AggregateType),
			attribute.String("outbox.aggregate_id", rw.AggregateID.String()),
			attribute.Int64("outbox.aggregate_version", rw.Version),
			attribute.String("request_id", deref(rw.RequestID)),
		)
	}
	msg := r.message(rw)
	if span.SpanContext().Equal(trace.SpanContextFromContext(parent)) {
		return span, msg
	}
	if tp, ts := telemetry.Inject(sctx); tp != "" {
		msg.Header.Set(HeaderTraceParent, tp)
		if ts != "" {
			msg.Header.Set(HeaderTraceState, ts)
		} else {
			msg.Header.Del(HeaderTraceState)
		}
	}
	return span, msg
}

// rowAttrs identify a row in log lines: its event, the request that wrote it, and
// the trace of span, or without one the trace the row was written in.
func rowAttrs(ctx context.Context, rw outboxdb.Row, span trace.Span) []slog.Attr {
	attrs := []slog.Attr{
		slog.String("event_id", rw.EventID.String()), slog.String("event_type", rw.EventType),
		slog.String("aggregate_id", rw.AggregateID.String()), slog.Int64("version", rw.Version),
		slog.String("request_id", deref(rw.RequestID)),
	}
	if span != nil {
		return append(attrs, telemetry.LogAttrs(trace.ContextWithSpan(ctx, span))...)
	}
	return append(attrs, telemetry.LogAttrs(telemetry.Extract(ctx, deref(rw.TraceParent), deref(rw.TraceState)))...)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func (r *Relay) message(rw outboxdb.Row) *nats.Msg {
	msg := nats.NewMsg(event.Subject(r.opts.SubjectPrefix, event.Envelope{
		AggregateType: rw.AggregateType, OwnerID: rw.Owner, AggregateID: rw.AggregateID,
	}))
	msg.Data = rw.Payload
	msg.Header.Set(jetstream.MsgIDHeader, rw.EventID.String())
	msg.Header.Set(HeaderEventType, rw.EventType)
	msg.Header.Set(HeaderAggregateVersion, strconv.FormatInt(rw.Version, 10))
	if rw.TraceParent != nil && *rw.TraceParent != "" {
		msg.Header.Set(HeaderTraceParent, *rw.TraceParent)
	}
	if rw.TraceState != nil && *rw.TraceState != "" {
		msg.Header.Set(HeaderTraceState, *rw.TraceState)
	}
	return msg
}

// rejectedByBroker tells a failure that is the row's own (the server or client refused
// this message: too large, stream limits) from a broker that is down or slow, which
// says nothing about the row and must not park it.
func rejectedByBroker(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) || errors.Is(err, nats.ErrMaxPayload) || errors.Is(err, nats.ErrBadSubject)
}

// backoff is the delay before the next attempt of a row that failed attempts times
// before this failure: exponential from BackoffMin, capped at BackoffMax, with equal
// jitter so the retries of a failed batch spread out.
func (r *Relay) backoff(attempts int) time.Duration {
	d := r.opts.BackoffMax
	if attempts < 30 {
		d = min(r.opts.BackoffMin<<attempts, r.opts.BackoffMax)
	}
	return d/2 + rand.N(d/2+1)
}
