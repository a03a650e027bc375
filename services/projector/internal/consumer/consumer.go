// Package consumer runs the projector's durable JetStream pull consumer: it fetches
// batches, applies them to the read model through package project and acknowledges
// only what MongoDB confirmed.
//
// Failure policy, per message:
//   - Undecodable or invalid event: redelivering the same bytes cannot help, so it is
//     dead-lettered at once and terminated.
//   - MongoDB unreachable or timing out (transient): nothing is acked or nacked. The
//     batch is held and retried with a growing pause, and the messages are kept alive
//     with InProgress so that their delivery count does not grow during an outage: an
//     outage never dead-letters anything. If the process stops meanwhile, AckWait
//     brings the messages back to another replica.
//   - MongoDB answered this write with an error (see isRejected) while it still serves
//     a trivial read (see readModelDown: otherwise it is an outage): NakWithDelay along
//     the back-off schedule; on its last allowed delivery (MaxDeliver) it is
//     dead-lettered and terminated instead, so JetStream never gives up on a message
//     silently and one bad document cannot stall the stream.
//
// A direct nats.go jetstream consumer is used instead of Watermill's router: Watermill's
// NATS adapter is a separate module the Go proxy does not serve here, and the router
// handles one message at a time, where this consumer applies a batch at once (grouped
// by aggregate, concurrent across aggregates), which is what makes the slow FerretDB
// stand-in keep up.
package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.opentelemetry.io/otel/trace"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/deadletter"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/metrics"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/project"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
)

// Config tunes a Consumer.
type Config struct {
	Stream        string
	Durable       string
	FilterSubject string
	// DeliverPolicy is where a new durable starts; the zero value is DeliverAll.
	DeliverPolicy jetstream.DeliverPolicy
	AckWait       time.Duration
	MaxDeliver    int
	BackOff       []time.Duration // redelivery delays after AckWait expiry, and Nak delays
	MaxAckPending int
	BatchSize     int
	FetchWait     time.Duration
	// WriteTimeout bounds the MongoDB work of one batch attempt.
	WriteTimeout time.Duration
	// Concurrency bounds the MongoDB writes in flight.
	Concurrency int
	// Database, when set, is written instead of the active read model: a rebuild's
	// fresh database, so every document is tried as an insert first
	// (project.InsertFirst).
	Database string
	// StatsInterval is how often consumer and dead-letter gauges are refreshed.
	StatsInterval time.Duration
	// Tracer starts a span per applied event (see trace.go); nil traces nothing.
	Tracer trace.Tracer
}

// defaultNakDelays is the Nak schedule when Config.BackOff is empty.
var defaultNakDelays = []time.Duration{time.Second, 5 * time.Second, 30 * time.Second}

// Consumer applies the stream to the read model.
type Consumer struct {
	cfg     Config
	js      jetstream.JetStream
	store   *readmodel.Store
	dead    *deadletter.Store
	metrics *metrics.Metrics
	log     *slog.Logger
	ready   atomic.Bool
	// server is the read model's server once detected (see projector).
	server atomic.Pointer[project.Server]
}

// Ready reports whether the durable consumer exists and Run is fetching from it.
func (c *Consumer) Ready() bool { return c.ready.Load() }

// New builds a consumer; Run starts it.
func New(cfg Config, js jetstream.JetStream, store *readmodel.Store, m *metrics.Metrics, log *slog.Logger) *Consumer {
	return &Consumer{cfg: cfg, js: js, store: store, dead: deadletter.New(store.Control()), metrics: m, log: log}
}

// Ensure creates or updates the durable consumer.
func (c *Consumer) Ensure(ctx context.Context) (jetstream.Consumer, error) {
	cons, err := c.js.CreateOrUpdateConsumer(ctx, c.cfg.Stream, jetstream.ConsumerConfig{
		Durable:       c.cfg.Durable,
		DeliverPolicy: c.cfg.DeliverPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.cfg.AckWait,
		MaxDeliver:    c.cfg.MaxDeliver,
		BackOff:       c.cfg.BackOff,
		FilterSubject: c.cfg.FilterSubject,
		MaxAckPending: c.cfg.MaxAckPending,
		// One active replica at a time: see pinGroup.
		PriorityPolicy: jetstream.PriorityPolicyPinned,
		PriorityGroups: []string{pinGroup},
		PinnedTTL:      c.pinnedTTL(),
	})
	if err != nil {
		return nil, fmt.Errorf("create consumer %s on %s: %w", c.cfg.Durable, c.cfg.Stream, err)
	}
	return cons, nil
}

// Run consumes until ctx is cancelled and returns nil then. Errors of the broker or of
// MongoDB are logged and retried, never returned: the process keeps going and resumes
// by itself.
func (c *Consumer) Run(ctx context.Context) error {
	var cons jetstream.Consumer
	for cons == nil {
		var err error
		if cons, err = c.Ensure(ctx); err != nil {
			c.log.Warn("consumer not ready, retrying", "error", err)
			if !sleep(ctx, 2*time.Second) {
				return nil
			}
		}
	}
	c.ready.Store(true)
	defer c.ready.Store(false)
	statsDone := make(chan struct{})
	statsCtx, stopStats := context.WithCancel(ctx)
	go func() {
		defer close(statsDone)
		c.refreshGauges(statsCtx, cons)
	}()
	defer func() { stopStats(); <-statsDone }()

	for ctx.Err() == nil {
		msgs, err := c.fetch(cons)
		if err != nil {
			c.log.Warn("fetch failed, retrying", "error", err)
			sleep(ctx, time.Second)
			continue
		}
		if len(msgs) == 0 {
			continue
		}
		start := time.Now()
		c.Handle(ctx, msgs)
		c.metrics.BatchSeconds.Observe(time.Since(start).Seconds())
	}
	return nil
}

// fetch waits up to FetchWait for one message, then takes whatever else is already
// waiting, up to BatchSize in all. A single Fetch of BatchSize would hold the first
// message back until the batch fills or FetchWait passes, which at low rates adds
// FetchWait/2 to the lag of every event.
func (c *Consumer) fetch(cons jetstream.Consumer) ([]jetstream.Msg, error) {
	first, err := cons.Fetch(1, jetstream.FetchMaxWait(c.cfg.FetchWait), c.pinned())
	if err != nil {
		return nil, err
	}
	msgs := c.collect(first, nil)
	if len(msgs) == 0 || c.cfg.BatchSize == 1 {
		return msgs, nil
	}
	rest, err := cons.Fetch(c.cfg.BatchSize-1, jetstream.FetchMaxWait(restWait), c.pinned())
	if err != nil {
		// Keep the first message: it is delivered, and handling it beats waiting AckWait.
		c.log.Warn("fetch failed", "error", err)
		return msgs, nil
	}
	return c.collect(rest, msgs), nil
}

func (c *Consumer) collect(batch jetstream.MessageBatch, msgs []jetstream.Msg) []jetstream.Msg {
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	if err := batch.Error(); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, jetstream.ErrNoMessages) {
		c.log.Warn("fetch ended with an error", "error", err, "messages", len(msgs))
	}
	return msgs
}

// item is one message of a batch on its way through Handle.
type item struct {
	msg   jetstream.Msg
	md    *jetstream.MsgMetadata
	event event.Envelope
}

// Handle applies one batch and settles every message in it: ack, nak, or dead letter
// and term. When ctx ends first, the messages still held are nacked for another
// replica to take.
func (c *Consumer) Handle(ctx context.Context, msgs []jetstream.Msg) {
	items := make([]item, 0, len(msgs))
	var poison []poisoned
	for _, m := range msgs {
		md, err := m.Metadata()
		if err != nil {
			// Not a JetStream message: nothing to ack, nothing to apply.
			c.log.Error("message without metadata", "subject", m.Subject(), "error", err)
			continue
		}
		e, err := project.Decode(m.Data())
		if err != nil {
			poison = append(poison, poisoned{msg: m, md: md, err: err})
			continue
		}
		items = append(items, item{msg: m, md: md, event: e})
	}
	for attempt := 0; len(poison) > 0; attempt++ {
		if attempt > 0 && !c.pauseMsgs(ctx, attempt, msgsOf(items, poison)) {
			release(msgsOf(items, poison))
			return
		}
		wctx, cancel := context.WithTimeout(ctx, c.cfg.WriteTimeout)
		poison = c.deadLetter(wctx, poison)
		cancel()
	}

	pending := items
	for attempt := 0; len(pending) > 0; attempt++ {
		if attempt > 0 && !c.pauseMsgs(ctx, attempt, msgsOf(pending, nil)) {
			release(msgsOf(pending, nil))
			return
		}
		transient, err := c.applyOnce(ctx, pending)
		if err != nil && ctx.Err() == nil {
			c.log.Warn("read model unavailable, holding the batch", "error", err, "messages", len(transient), "attempt", attempt+1)
		}
		pending = transient
	}
}

type poisoned struct {
	msg       jetstream.Msg
	md        *jetstream.MsgMetadata
	err       error
	requestID string // of the write behind the event; empty when it did not decode
}

// applyOnce applies items once; it settles what it can and returns the items held back
// by a transient error, with that error.
func (c *Consumer) applyOnce(ctx context.Context, items []item) (transient []item, _ error) {
	wctx, cancel := context.WithTimeout(ctx, c.cfg.WriteTimeout)
	defer cancel()
	db, err := c.database(wctx)
	var p *project.Projector
	if err == nil {
		p, err = c.projector(wctx, db)
	}
	if err != nil {
		c.metrics.Events.WithLabelValues(metrics.OutcomeFailed).Add(float64(len(items)))
		return items, err
	}
	events := make([]event.Envelope, len(items))
	for i, it := range items {
		events[i] = it.event
	}
	spans := c.startApplySpans(ctx, items)
	results := p.Apply(wctx, events)

	var (
		ok        []item
		rejected  []poisoned
		lastErr   error
		maxSeq    uint64
		occurred  time.Time
		appliedAt = time.Now()
	)
	// Rejections during an outage of the read model's own backend are transient.
	down := readModelDown(wctx, db, results)
	for i, r := range results {
		it := items[i]
		c.endApplySpan(ctx, spans[i], it, r)
		switch {
		case r.Err == nil:
			ok = append(ok, it)
			if r.Outcome == project.Applied {
				c.metrics.Events.WithLabelValues(metrics.OutcomeApplied).Inc()
				c.metrics.Lag.Observe(appliedAt.Sub(it.event.OccurredAt).Seconds())
			} else {
				c.metrics.Events.WithLabelValues(metrics.OutcomeStale).Inc()
			}
			if it.md.Sequence.Stream > maxSeq {
				maxSeq, occurred = it.md.Sequence.Stream, it.event.OccurredAt
			}
		case isRejected(r.Err) && !down:
			rejected = append(rejected, poisoned{msg: it.msg, md: it.md, err: r.Err, requestID: it.event.Trace.RequestID})
		default:
			c.metrics.Events.WithLabelValues(metrics.OutcomeFailed).Inc()
			transient = append(transient, it)
			lastErr = r.Err
		}
	}
	if maxSeq > 0 {
		// The watermark is informational: a failure to move it must not hold back acks.
		if err := p.AdvanceWatermark(wctx, maxSeq, occurred); err != nil {
			c.log.Warn("watermark not advanced", "error", err)
		}
	}
	for _, it := range ok {
		if err := it.msg.Ack(); err != nil {
			// Applied but not acked: it comes back and is skipped as stale.
			c.log.Warn("ack failed", "stream_seq", it.md.Sequence.Stream, "error", err)
		}
	}
	c.settleRejected(wctx, rejected)
	return transient, lastErr
}

// settleRejected naks documents MongoDB refused, or dead-letters them on their last
// delivery.
func (c *Consumer) settleRejected(ctx context.Context, rejected []poisoned) {
	var last []poisoned
	for _, p := range rejected {
		if c.cfg.MaxDeliver > 0 && p.md.NumDelivered >= uint64(c.cfg.MaxDeliver) {
			last = append(last, p)
			continue
		}
		c.metrics.Events.WithLabelValues(metrics.OutcomeFailed).Inc()
		delay := nakDelay(c.cfg.BackOff, p.md.NumDelivered)
		c.log.Warn("write rejected, redelivering later", "stream_seq", p.md.Sequence.Stream, "request_id", p.requestID,
			"delivery", p.md.NumDelivered, "delay", delay, "error", p.err)
		if err := p.msg.NakWithDelay(delay); err != nil {
			c.log.Warn("nak failed", "stream_seq", p.md.Sequence.Stream, "error", err)
		}
	}
	if left := c.deadLetter(ctx, last); len(left) > 0 {
		// Unsettled: they come back after AckWait and are dead-lettered then.
		c.log.Warn("dead letter failed, left for redelivery", "messages", len(left))
	}
}

// deadLetter records each message and terminates it. It returns the messages whose
// record failed, unsettled.
func (c *Consumer) deadLetter(ctx context.Context, ps []poisoned) (left []poisoned) {
	for _, p := range ps {
		if err := c.dead.Add(ctx, p.msg, p.err); err != nil {
			c.log.Warn("dead letter not recorded", "stream_seq", p.md.Sequence.Stream, "request_id", p.requestID, "error", err)
			left = append(left, p)
			continue
		}
		c.metrics.Events.WithLabelValues(metrics.OutcomeDeadLettered).Inc()
		c.log.Error("message dead-lettered", "stream_seq", p.md.Sequence.Stream, "request_id", p.requestID, "subject", p.msg.Subject(),
			"deliveries", p.md.NumDelivered, "error", p.err)
		if err := p.msg.TermWithReason("dead-lettered: " + p.err.Error()); err != nil {
			c.log.Warn("term failed", "stream_seq", p.md.Sequence.Stream, "error", err)
		}
	}
	return left
}

// pauseMsgs waits before retry number attempt (100 ms doubling, up to 5 s or a
// quarter of AckWait) and tells JetStream, before and after, that the messages are
// still being worked on, so that AckWait does not expire during an outage and their
// delivery count stays put.
func (c *Consumer) pauseMsgs(ctx context.Context, attempt int, msgs []jetstream.Msg) bool {
	inProgress(msgs)
	d := min(100*time.Millisecond<<min(attempt-1, 6), 5*time.Second, c.cfg.AckWait/4)
	if !sleep(ctx, d) {
		return false
	}
	inProgress(msgs)
	return true
}

// release hands held messages back on shutdown, so that another replica takes them
// now rather than after AckWait.
func release(msgs []jetstream.Msg) {
	for _, m := range msgs {
		_ = m.Nak() // best effort: without it they come back after AckWait
	}
}

func inProgress(msgs []jetstream.Msg) {
	for _, m := range msgs {
		_ = m.InProgress() // best effort: a lost one only means an earlier redelivery
	}
}

func msgsOf(items []item, ps []poisoned) []jetstream.Msg {
	out := make([]jetstream.Msg, 0, len(items)+len(ps))
	for _, it := range items {
		out = append(out, it.msg)
	}
	for _, p := range ps {
		out = append(out, p.msg)
	}
	return out
}

func (c *Consumer) database(ctx context.Context) (*mongo.Database, error) {
	if c.cfg.Database != "" {
		return c.store.Control().Client().Database(c.cfg.Database), nil
	}
	return c.store.Active(ctx)
}

// projector writes a batch into db on the write path of the read model's server,
// asked once (project.DetectServer) and then remembered.
func (c *Consumer) projector(ctx context.Context, db *mongo.Database) (*project.Projector, error) {
	s := c.server.Load()
	if s == nil {
		detected, err := project.DetectServer(ctx, db.Client())
		if err != nil {
			return nil, err
		}
		c.log.Info("read model server detected", "server", detected)
		s = &detected
		c.server.Store(s)
	}
	opts := []project.Option{project.OnServer(*s)}
	if c.cfg.Database != "" {
		opts = append(opts, project.InsertFirst())
	}
	return project.New(db, c.cfg.Concurrency, opts...), nil
}

// isRejected reports whether MongoDB answered about this very write with an error
// (a write or command error that is not marked transient), as opposed to not
// answering (network, timeout, shutdown, failover), which is transient.
func isRejected(err error) bool {
	if mongo.IsNetworkError(err) || mongo.IsTimeout(err) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var se mongo.ServerError
	if !errors.As(err, &se) {
		return false
	}
	for _, l := range []string{"RetryableWriteError", "TransientTransactionError", "NetworkError"} {
		if se.HasErrorLabel(l) {
			return false
		}
	}
	for _, c := range transientCodes {
		if se.HasErrorCode(c) {
			return false
		}
	}
	return true
}

// transientCodes are server error codes of a server that is stopping, failing over or
// overloaded: retry them like an outage.
var transientCodes = []int{
	6,     // HostUnreachable
	7,     // HostNotFound
	89,    // NetworkTimeout
	91,    // ShutdownInProgress
	189,   // PrimarySteppedDown
	262,   // ExceededTimeLimit
	9001,  // SocketException
	10107, // NotWritablePrimary
	11600, // InterruptedAtShutdown
	11602, // InterruptedDueToReplStateChange
	13435, // NotPrimaryNoSecondaryOk
	13436, // NotPrimaryOrSecondary
}

func nakDelay(schedule []time.Duration, delivered uint64) time.Duration {
	if len(schedule) == 0 {
		schedule = defaultNakDelays
	}
	i := int(min(delivered, uint64(len(schedule)))) - 1
	return schedule[max(i, 0)]
}

// refreshGauges mirrors the consumer's pending counts and the dead-letter count into
// the gauges until ctx ends.
func (c *Consumer) refreshGauges(ctx context.Context, cons jetstream.Consumer) {
	t := time.NewTicker(c.cfg.StatsInterval)
	defer t.Stop()
	for {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if info, err := cons.Info(qctx); err == nil {
			c.metrics.Pending.Set(float64(info.NumPending))
			c.metrics.AckPending.Set(float64(info.NumAckPending))
			c.metrics.Redelivered.Set(float64(info.NumRedelivered))
		}
		if n, err := c.dead.Count(qctx); err == nil {
			c.metrics.DeadLetters.Set(float64(n))
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
