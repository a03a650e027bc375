// Package consumer runs the projector's durable JetStream pull consumer: it fetches
// batches, applies them to the read model through package project and acknowledges
// only what MongoDB confirmed.
//
// Failure policy, per message:
//   - Delivered more than MaxDeliver times: dead-lettered and terminated without being
//     applied. Its earlier deliveries ended unsettled (a crash, a shutdown during an
//     outage, a dead-letter record that failed), and a message that kills the process
//     must not do so forever. The limit is counted here, not by JetStream: the durable
//     consumer has MaxDeliver -1, because at its limit JetStream drops a message that
//     is still unsettled, silently, with nothing recorded anywhere.
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
//     dead-lettered and terminated instead, so that one bad document cannot stall the
//     stream.
//   - Dead-lettering records the message first and terminates it only then. When the
//     record fails, the message is nacked with the back-off delay instead: it comes
//     back and is tried again, so nothing leaves the stream unrecorded.
//
// Shutdown (the end of Run's context) stops the fetching, not the work: the batch in
// hand, and the next one if it was already fetched (batches are fetched one ahead),
// finish under a context that shutdown does not cancel, bounded by ShutdownTimeout,
// and are acknowledged, so that a rolling deploy costs no delivery.
// What is still held after ShutdownTimeout (an outage) is nacked for the next replica.
//
// A direct nats.go jetstream consumer is used, not yet Watermill's router (issue 11,
// item 2, open). Watermill v1.5.1 and watermill-nats/v2 v2.1.3 are both served by the
// Go module proxy; what is missing is the fit: the router hands a handler one message at
// a time, where this consumer applies a fetched batch at once (grouped by aggregate,
// concurrent across aggregates, coalesced), which is what makes the slow FerretDB
// stand-in keep up. Moving onto the router needs a subscriber over the partition
// consumers feeding a batcher behind the handler, with the outage hold and InProgress
// keep-alives kept.
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
	Stream  string
	Durable string
	// FilterSubjects are the stored subjects the durable takes: one partition's, or
	// both layouts' (event.StreamSubjects, event.PartitionedSubjects) for a rebuild.
	FilterSubjects []string
	// DeliverPolicy is where a new durable starts; the zero value is DeliverAll.
	//
	// A DeliverLastPerSubject consumer is a rebuild's, run by one process, and it has
	// neither a priority group nor pulls that expire while messages wait: nats-server
	// (up to 2.15.3 at least) drops a message of a last-per-subject snapshot when the
	// pull it was taken for has just expired or holds a stale pin id (it steps its
	// sequence back to resend the message, but the snapshot has moved on). So the
	// second pull of its batches is a no-wait pull, which never expires and which a
	// priority group would not allow; its first pull waits FetchWait, which the
	// caller keeps well above the time the server takes to send one message.
	DeliverPolicy jetstream.DeliverPolicy
	AckWait       time.Duration
	// MaxDeliver is how many deliveries a message gets (zero or -1: unlimited); see the
	// package doc for what happens on the last one and past it.
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
	// StatsInterval is how often consumer and dead-letter gauges are refreshed; zero
	// leaves them to the caller (package partition sums them over its consumers).
	StatsInterval time.Duration
	// PinnedTTL is how long the pinned client may go without pulling before another
	// takes the pin over; zero is AckWait.
	PinnedTTL time.Duration
	// Existing updates the durable but never creates it: the legacy durable of the
	// unpartitioned layout, which package partition drains and deletes, must not come
	// back once deleted.
	Existing bool
	// Gate, when set, is shared by the consumers of one process: a batch is applied
	// only while it holds a slot, so that the writes in flight stay within its
	// capacity times Concurrency however many partitions the process consumes.
	Gate chan struct{}
	// Applied, when set, is called with the messages of each batch attempt whose
	// writes MongoDB confirmed, before they are acknowledged (tests record the order
	// of applies with it).
	Applied func([]Applied)
	// ShutdownTimeout bounds the work on the batch in hand once Run's context ends;
	// zero nacks it at once.
	ShutdownTimeout time.Duration
	// Tracer starts a span per applied event (see trace.go); nil traces nothing.
	Tracer trace.Tracer
}

// Applied is one message whose write MongoDB confirmed.
type Applied struct {
	StreamSeq uint64
	Delivery  uint64 // 1 on the first delivery
	Subject   string
	Event     event.Envelope
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

// solo reports whether this is a rebuild's consumer (see Config.DeliverPolicy).
func (c *Consumer) solo() bool { return c.cfg.DeliverPolicy == jetstream.DeliverLastPerSubjectPolicy }

// Ensure creates or updates the durable consumer.
func (c *Consumer) Ensure(ctx context.Context) (jetstream.Consumer, error) {
	cc := jetstream.ConsumerConfig{
		Durable:       c.cfg.Durable,
		DeliverPolicy: c.cfg.DeliverPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.cfg.AckWait,
		// Unlimited: the consumer counts deliveries itself (see the package doc). An
		// existing durable with a finite MaxDeliver is updated in place.
		MaxDeliver:     -1,
		BackOff:        c.cfg.BackOff,
		FilterSubjects: c.cfg.FilterSubjects,
		MaxAckPending:  c.cfg.MaxAckPending,
	}
	if !c.solo() {
		// One client at a time per durable: see PinGroup.
		cc.PriorityPolicy, cc.PriorityGroups, cc.PinnedTTL = jetstream.PriorityPolicyPinned, []string{PinGroup}, c.pinnedTTL()
	}
	upsert := c.js.CreateOrUpdateConsumer
	if c.cfg.Existing {
		upsert = c.js.UpdateConsumer
	}
	cons, err := upsert(ctx, c.cfg.Stream, cc)
	if err != nil {
		return nil, fmt.Errorf("create consumer %s on %s: %w", c.cfg.Durable, c.cfg.Stream, err)
	}
	return cons, nil
}

// Run consumes until ctx is cancelled, finishes the batch in hand (for up to
// ShutdownTimeout), and returns nil then. Errors of the broker or of MongoDB are
// logged and retried, never returned: the process keeps going and resumes by itself.
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
	if c.cfg.StatsInterval > 0 {
		statsDone := make(chan struct{})
		statsCtx, stopStats := context.WithCancel(ctx)
		go func() {
			defer close(statsDone)
			c.refreshGauges(statsCtx, cons)
		}()
		defer func() { stopStats(); <-statsDone }()
	}
	work, stopWork := c.workContext(ctx)
	defer stopWork()
	defer c.flush()

	// The next batch is fetched while this one is applied: the fetch's round trips are
	// then off the path of a backlog.
	batches := make(chan []jetstream.Msg)
	go c.prefetch(ctx, cons, batches)
	for msgs := range batches {
		c.acquire(msgs)
		start := time.Now()
		c.Handle(work, msgs)
		c.metrics.BatchSeconds.Observe(time.Since(start).Seconds())
		c.releaseGate()
	}
	return nil
}

// acquire waits for a slot of the Gate, keeping msgs in progress meanwhile: another
// partition's batch may be held through an outage, and AckWait must not cost these a
// delivery.
func (c *Consumer) acquire(msgs []jetstream.Msg) {
	if c.cfg.Gate == nil {
		return
	}
	t := time.NewTicker(max(c.cfg.AckWait/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case c.cfg.Gate <- struct{}{}:
			return
		case <-t.C:
			inProgress(msgs)
		}
	}
}

func (c *Consumer) releaseGate() {
	if c.cfg.Gate != nil {
		<-c.cfg.Gate
	}
}

// prefetch fetches batches and hands them to Run through out until ctx ends, then
// closes out. It fetches nothing once ctx has ended. Run takes every batch handed
// over, after ctx ended too, so a batch fetched is never dropped: it is applied under
// the work context, within ShutdownTimeout, like the batch in hand, instead of burning
// a delivery. The hand-over waits for Run, so at most one batch waits beside the one
// in hand.
func (c *Consumer) prefetch(ctx context.Context, cons jetstream.Consumer, out chan<- []jetstream.Msg) {
	defer close(out)
	for ctx.Err() == nil {
		msgs, err := c.fetch(ctx, cons)
		if err != nil {
			c.log.Warn("fetch failed, retrying", "error", err)
			sleep(ctx, time.Second)
			continue
		}
		if len(msgs) > 0 {
			c.handOver(out, msgs)
		}
	}
}

// handOver waits until Run takes msgs. The batch in hand may be held through an
// outage meanwhile, so msgs are kept in progress as a held batch is: AckWait must not
// expire and cost them a delivery.
func (c *Consumer) handOver(out chan<- []jetstream.Msg, msgs []jetstream.Msg) {
	t := time.NewTicker(max(c.cfg.AckWait/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case out <- msgs:
			return
		case <-t.C:
			inProgress(msgs)
		}
	}
}

// workContext is the context of the batches' writes and acknowledgements. The end of
// ctx does not cancel it: cancelling writes in flight would leave the batch to be
// nacked, using up a delivery of every message in it at each rolling deploy. It ends
// ShutdownTimeout after ctx, which bounds the stop.
func (c *Consumer) workContext(ctx context.Context) (context.Context, context.CancelFunc) {
	work, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(c.cfg.ShutdownTimeout, cancel) })
	return work, func() { stop(); cancel() }
}

// flushTimeout bounds the flush of the last acknowledgements at the end of Run.
const flushTimeout = 2 * time.Second

// flush sends the acknowledgements still buffered, so that they reach the server
// before the process disconnects: an ack lost there is a redelivery.
func (c *Consumer) flush() {
	if err := c.js.Conn().FlushTimeout(flushTimeout); err != nil {
		c.log.Warn("last acknowledgements not flushed", "error", err)
	}
}

// fetch waits up to FetchWait for one message, then takes whatever else is already
// waiting, up to BatchSize in all. A single Fetch of BatchSize would hold the first
// message back until the batch fills or FetchWait passes, which at low rates adds
// FetchWait/2 to the lag of every event. Once ctx ends it fetches no more.
func (c *Consumer) fetch(ctx context.Context, cons jetstream.Consumer) ([]jetstream.Msg, error) {
	opts := []jetstream.FetchOpt{jetstream.FetchMaxWait(c.cfg.FetchWait)}
	if !c.solo() {
		opts = append(opts, c.pinned())
	}
	first, err := cons.Fetch(1, opts...)
	if err != nil {
		return nil, err
	}
	msgs := c.collect(first, nil)
	if len(msgs) == 0 || c.cfg.BatchSize == 1 || ctx.Err() != nil {
		return msgs, nil
	}
	var rest jetstream.MessageBatch
	if c.solo() {
		rest, err = cons.FetchNoWait(c.cfg.BatchSize - 1)
	} else {
		rest, err = cons.Fetch(c.cfg.BatchSize-1, jetstream.FetchMaxWait(restWait), c.pinned())
	}
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
	switch err := batch.Error(); {
	case err == nil, errors.Is(err, context.Canceled), errors.Is(err, jetstream.ErrNoMessages):
	case errors.Is(err, jetstream.ErrPinIDMismatch):
		// The pin moved to this client or away from it (a partition changing hands): the
		// next pull asks again.
		c.log.Debug("fetch ended: the pin moved", "messages", len(msgs))
	default:
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

// errExhausted is the error of a message dead-lettered for its deliveries alone.
var errExhausted = errors.New("delivered more often than MaxDeliver allows: earlier deliveries ended unsettled " +
	"(a crash, a shutdown during an outage, or a dead-letter record that failed)")

// Handle applies one batch and settles every message in it: ack, nak, or dead letter
// and term. It returns once all are settled, or when ctx ends: the messages still
// held are then nacked, to come back to this replica or another.
func (c *Consumer) Handle(ctx context.Context, msgs []jetstream.Msg) {
	items := make([]item, 0, len(msgs))
	var dead []poisoned
	for _, m := range msgs {
		md, err := m.Metadata()
		if err != nil {
			// Not a JetStream message: nothing to ack, nothing to apply.
			c.log.Error("message without metadata", "subject", m.Subject(), "error", err)
			continue
		}
		e, err := project.Decode(m.Data())
		switch {
		case err != nil:
			dead = append(dead, poisoned{msg: m, md: md, err: err})
		case c.exhausted(md):
			dead = append(dead, poisoned{msg: m, md: md, requestID: e.Trace.RequestID,
				err: fmt.Errorf("%w (delivery %d, MaxDeliver %d)", errExhausted, md.NumDelivered, c.cfg.MaxDeliver)})
		default:
			items = append(items, item{msg: m, md: md, event: e})
		}
	}
	c.deadLetter(ctx, dead)

	pending := items
	for attempt := 0; len(pending) > 0; attempt++ {
		if attempt > 0 && !c.pauseMsgs(ctx, attempt, msgsOf(pending)) {
			release(msgsOf(pending))
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

// applyOnce applies items once under a WriteTimeout of its own; it settles what it can
// and returns the items held back by a transient error, with that error.
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
	if c.cfg.Applied != nil && len(ok) > 0 {
		applied := make([]Applied, len(ok))
		for i, it := range ok {
			applied[i] = Applied{StreamSeq: it.md.Sequence.Stream, Delivery: it.md.NumDelivered, Subject: it.msg.Subject(), Event: it.event}
		}
		c.cfg.Applied(applied)
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
	// Not wctx: the writes and the watermark may have spent it, and a dead letter that
	// cannot be recorded costs the message a delivery.
	c.settleRejected(ctx, rejected)
	return transient, lastErr
}

// lastAllowed reports whether md is a message's last allowed delivery, or a later one.
func (c *Consumer) lastAllowed(md *jetstream.MsgMetadata) bool {
	return c.cfg.MaxDeliver > 0 && md.NumDelivered >= uint64(c.cfg.MaxDeliver)
}

// exhausted reports whether md is past a message's last allowed delivery.
func (c *Consumer) exhausted(md *jetstream.MsgMetadata) bool {
	return c.cfg.MaxDeliver > 0 && md.NumDelivered > uint64(c.cfg.MaxDeliver)
}

// settleRejected naks documents MongoDB refused, or dead-letters them on their last
// allowed delivery.
func (c *Consumer) settleRejected(ctx context.Context, rejected []poisoned) {
	var last []poisoned
	for _, p := range rejected {
		if c.lastAllowed(p.md) {
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
	c.deadLetter(ctx, last)
}

// deadLetter records each message, then terminates it. A message whose record fails
// is nacked with the back-off delay instead: it comes back, past its last allowed
// delivery, and is dead-lettered then. The records share one WriteTimeout of their
// own.
func (c *Consumer) deadLetter(ctx context.Context, ps []poisoned) {
	if len(ps) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.WriteTimeout)
	defer cancel()
	for _, p := range ps {
		if err := c.dead.Add(ctx, p.msg, p.err); err != nil {
			c.metrics.Events.WithLabelValues(metrics.OutcomeFailed).Inc()
			delay := nakDelay(c.cfg.BackOff, p.md.NumDelivered)
			c.log.Warn("dead letter not recorded, redelivering later", "stream_seq", p.md.Sequence.Stream, "request_id", p.requestID,
				"delivery", p.md.NumDelivered, "delay", delay, "error", err)
			if err := p.msg.NakWithDelay(delay); err != nil {
				// Unsettled then: it comes back after AckWait.
				c.log.Warn("nak failed", "stream_seq", p.md.Sequence.Stream, "error", err)
			}
			continue
		}
		c.metrics.Events.WithLabelValues(metrics.OutcomeDeadLettered).Inc()
		c.log.Error("message dead-lettered", "stream_seq", p.md.Sequence.Stream, "request_id", p.requestID, "subject", p.msg.Subject(),
			"deliveries", p.md.NumDelivered, "error", p.err)
		if err := p.msg.TermWithReason("dead-lettered: " + p.err.Error()); err != nil {
			// It comes back and is recorded again, over the same dead letter.
			c.log.Warn("term failed", "stream_seq", p.md.Sequence.Stream, "error", err)
		}
	}
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

// release hands held messages back on shutdown, so that they come back now rather
// than after AckWait. The durable has no MaxDeliver, so a nak never drops a message
// on its last delivery: it comes back past it and is dead-lettered then.
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

func msgsOf(items []item) []jetstream.Msg {
	out := make([]jetstream.Msg, 0, len(items))
	for _, it := range items {
		out = append(out, it.msg)
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
