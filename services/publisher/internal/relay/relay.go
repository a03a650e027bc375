// Package relay drains the outbox into JetStream: it claims the unpublished rows of the
// partitions this replica leases, publishes them asynchronously with the event id as
// Nats-Msg-Id, waits for every PubAck and marks the acknowledged rows published in one
// statement fenced on the lease.
//
// Delivery is at least once: a crash between the PubAck and the mark leaves the rows
// unpublished, they are published again, and JetStream drops the copies inside its
// duplicate window (see config.Config.MaxRepublishDelay for why the window covers it).
//
// Order: rows are published sorted by aggregate and version, one replica per partition
// at a time (package lease), so one aggregate's events reach the stream in version
// order. A row whose publish failed holds back the later versions of its aggregate
// until it succeeds or is parked and retried, without holding up other aggregates.
package relay

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxtodo/outboxtodo/services/publisher/internal/lease"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/metrics"
	"github.com/outboxtodo/outboxtodo/shared/event"
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
	return &Relay{pool: pool, js: js, leases: leases, wake: wake, opts: opts, m: m, log: log}
}

// Run drains until ctx is cancelled: at once again while batches come back full, after
// PollMin while there is work, and after a delay doubling up to PollMax while idle, or
// as soon as a notification or a new lease arrives. A failing drain (broker or database
// down) is logged and retried with the same growing delay. It returns nil on
// cancellation, after finishing or abandoning the batch in flight.
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
		case res.Claimed == r.opts.BatchSize:
			delay, idle = 0, r.opts.PollMin
		case res.Claimed > 0:
			delay, idle = r.opts.PollMin, r.opts.PollMin
		default:
			delay, idle = idle, min(2*idle, r.opts.PollMax)
		}
		if delay == 0 {
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

// drainGraceful runs one drain that survives the cancellation of ctx for ShutdownGrace.
func (r *Relay) drainGraceful(ctx context.Context) (Result, error) {
	bctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(r.opts.ShutdownGrace, cancel)
		context.AfterFunc(bctx, func() { t.Stop() })
	})
	defer stop()
	return r.Drain(bctx)
}

// Result counts what one drain did.
type Result struct {
	Claimed   int // rows read
	Published int // rows acknowledged and marked published
	Fenced    int // rows acknowledged but not marked: the lease was lost meanwhile
	Failed    int // rows whose publish failed (broker or event)
	Parked    int // rows parked by this drain
}

// row is one claimed outbox row.
type row struct {
	eventID     uuid.UUID
	partition   int32
	epoch       int64
	aggType     string
	aggID       uuid.UUID
	version     int64
	eventType   string
	owner       uuid.UUID
	payload     string
	traceParent *string
	traceState  *string
	createdAt   time.Time
	attempts    int
}

type aggKey struct {
	typ string
	id  uuid.UUID
}

// Drain publishes one batch of the leased partitions' unpublished rows. It returns an
// error when the batch could not be claimed or marked, or when the broker failed
// (connection lost, timeouts): those rows stay as they are and are retried without
// counting against them. Rows the broker rejected on their own count an attempt each.
func (r *Relay) Drain(ctx context.Context) (Result, error) {
	var res Result
	held := r.leases.Held()
	if len(held) == 0 {
		return res, nil
	}
	rows, err := r.claim(ctx, held)
	if err != nil {
		return res, err
	}
	res.Claimed = len(rows)
	if len(rows) == 0 {
		return res, nil
	}
	r.m.BatchSize.Observe(float64(len(rows)))
	// Per aggregate in version order; the aggregates' relative order does not matter.
	slices.SortFunc(rows, func(a, b row) int {
		return cmp.Or(cmp.Compare(a.aggType, b.aggType), slices.Compare(a.aggID[:], b.aggID[:]), cmp.Compare(a.version, b.version))
	})

	start := time.Now()
	futures := make([]jetstream.PubAckFuture, len(rows))
	errs := make([]error, len(rows))
	blocked := map[aggKey]bool{} // aggregates with a failed row: their later rows wait
	for i, rw := range rows {
		k := aggKey{rw.aggType, rw.aggID}
		if blocked[k] {
			continue
		}
		futures[i], errs[i] = r.js.PublishMsgAsync(r.message(rw))
		if errs[i] != nil {
			blocked[k] = true
		}
	}
	if r.afterSend != nil {
		r.afterSend()
	}

	// Await every PubAck against one deadline for the batch.
	timer := time.NewTimer(r.opts.PublishTimeout)
	defer timer.Stop()
	var acked []row
	timedOut := false
	for i, f := range futures {
		if f == nil {
			continue
		}
		if timedOut {
			errs[i] = fmt.Errorf("no PubAck within %s", r.opts.PublishTimeout)
			continue
		}
		select {
		case <-f.Ok():
			acked = append(acked, rows[i])
		case err := <-f.Err():
			errs[i] = err
		case <-timer.C:
			timedOut = true
			errs[i] = fmt.Errorf("no PubAck within %s", r.opts.PublishTimeout)
		case <-ctx.Done():
			return res, fmt.Errorf("batch abandoned before every PubAck: %w", ctx.Err())
		}
	}
	r.m.PublishTime.Observe(time.Since(start).Seconds())
	now := time.Now()
	for _, rw := range acked {
		r.m.EventLag.Observe(now.Sub(rw.createdAt).Seconds())
	}
	if r.afterAcks != nil {
		r.afterAcks()
	}

	marked, err := r.markPublished(ctx, acked)
	if err != nil {
		return res, err
	}
	res.Published, res.Fenced = marked, len(acked)-marked
	r.m.Published.Add(float64(res.Published))
	if res.Fenced > 0 {
		r.m.Fenced.Add(float64(res.Fenced))
		r.log.Warn("lease lost during the batch: acknowledged rows left to the new owner", "rows", res.Fenced)
	}

	var rejected []row
	var rejectedErrs []string
	var brokerErr error
	for i, err := range errs {
		if err == nil {
			continue
		}
		res.Failed++
		if !rejectedByBroker(err) {
			r.m.Failed.WithLabelValues("broker").Inc()
			brokerErr = cmp.Or(brokerErr, err)
			continue
		}
		r.m.Failed.WithLabelValues("event").Inc()
		rejected = append(rejected, rows[i])
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
		return res, fmt.Errorf("publish %d of %d rows failed: %w", res.Failed-len(rejected), len(rows), brokerErr)
	}
	return res, nil
}

func (r *Relay) message(rw row) *nats.Msg {
	msg := nats.NewMsg(event.Subject(r.opts.SubjectPrefix, event.Envelope{
		AggregateType: rw.aggType, OwnerID: rw.owner, AggregateID: rw.aggID,
	}))
	msg.Data = []byte(rw.payload)
	msg.Header.Set(jetstream.MsgIDHeader, rw.eventID.String())
	msg.Header.Set(HeaderEventType, rw.eventType)
	msg.Header.Set(HeaderAggregateVersion, strconv.FormatInt(rw.version, 10))
	if rw.traceParent != nil && *rw.traceParent != "" {
		msg.Header.Set(HeaderTraceParent, *rw.traceParent)
	}
	if rw.traceState != nil && *rw.traceState != "" {
		msg.Header.Set(HeaderTraceState, *rw.traceState)
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
