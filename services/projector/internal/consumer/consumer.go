// Package consumer runs the projector's handling of the stream on Watermill's message
// router: durable JetStream pull consumers fetch batches and feed them, one message at
// a time, to one Pipeline per process, whose router runs Watermill's middleware around
// a handler that hands each event to a process-wide batch; the batch is applied to the
// read model through package project, and each message is acknowledged only once
// MongoDB confirmed its own write.
//
// The shape, and why:
//
//   - Consumer fetches its durable's batches (one fetched ahead) and emits each message
//     as a Watermill message carrying its JetStream metadata (MetaStream, MetaSubject,
//     MetaStreamSeq, MetaDeliveries) and the event's request id as its correlation id.
//     It emits a message once the previous one is queued for its write, and fetches
//     the next batch's messages only once every message of this one is settled: a
//     durable's (a partition's) messages are applied in stream order. (A message
//     retried after an outage or a timeout is queued again on its own and may land
//     after later ones of its batch: the version guard makes that harmless.) It maps
//     the router's verdict to JetStream: ack to Ack, or to Term when the poison path
//     recorded a dead letter; nack to NakWithDelay along the back-off schedule, or to
//     Nak once shutdown has given up on the message. Unsettled messages are kept alive
//     with InProgress, so that AckWait never costs a delivery while they wait.
//   - Pipeline's handler does not write: it queues the event for the next batch and
//     waits for its own outcome. A batch takes whatever the consumers of the process
//     (every partition this replica holds) have queued and applies it at once
//     (grouped by aggregate, concurrent across aggregates, coalesced), paying the
//     per-batch writes (stats, watermark) once for all of them. Two batches are applied
//     at a time, and no two at once hold events of one durable (see batcher): under
//     load a batch takes everything that accumulated while the others ran, however
//     thinly the load spreads over the partitions, and the writes in flight stay
//     within twice Concurrency whatever the number of partitions held.
//   - The subscriber is our own (a small message.Subscriber over the consumers), not
//     watermill-nats/v2's pkg/jetstream subscriber (v2.1.3). BenchmarkSubscribers
//     (subscriber_bench_test.go) drains one backlog of 3,000 creates from 8 partition
//     durables through the router: that subscriber with a handler that applies its
//     event 1,022 and 279 events/s, ours 4,784 and 1,920; that subscriber with a
//     handler that only acks, 29,087 and 18,363 messages/s (2026-11-30, two runs, the
//     second at a load average of 19 on 2 shared cores). Its
//     delivery is fast; what falls short is its shape: it runs nats.go's Consume with
//     one callback at a time per subscription, and the callback waits for the
//     handler's verdict and its confirmed ack (DoubleAck), so a partition has one
//     message in flight and no batch can hold more than one event per partition,
//     where the stand-in's cheap write is an insertMany of many. It also logs every
//     message at info level, gives up on a message after its AckWaitTimeout without
//     settling it while the handler may still be writing it, has no InProgress
//     keep-alive for a message held through an outage, and its Close drains and
//     closes the NATS connection it was given. Its default Unmarshaler hands the
//     handler none of JetStream's metadata (deliveries, stream sequence) that the
//     failure policy below needs; a custom one could.
//
// Middleware, outermost first: CorrelationID; PoisonQueueWithFilter into the dead
// letters (a message.Publisher that records the dead letter); Retry with back-off;
// Timeout; Recoverer.
//
// Failure policy, per message:
//   - Delivered more than MaxDeliver times: dead-lettered and terminated without being
//     applied. Its earlier deliveries ended unsettled (a crash, a shutdown during an
//     outage, a dead-letter record that failed), and a message that kills the process
//     must not do so forever. The limit is counted here, from MetaDeliveries, not by
//     JetStream: the durable consumer has MaxDeliver -1, because at its limit JetStream
//     drops a message that is still unsettled, silently, with nothing recorded anywhere.
//   - Undecodable or invalid event: redelivering the same bytes cannot help, so it is
//     dead-lettered at once and terminated.
//   - MongoDB unreachable or timing out (transient), or the handler's Timeout: retried
//     by Retry with a growing pause (200 ms, then four times longer at each retry, up
//     to 5 s or a quarter of AckWait) for as long as the message's context lives; the
//     message is kept alive with InProgress meanwhile, so that its delivery count
//     does not grow during an outage: an outage never dead-letters anything. If the
//     process stops meanwhile, the message is nacked at the end of ShutdownTimeout
//     (or AckWait brings it back to another replica).
//   - MongoDB answered this write with an error (see isRejected) while it still serves
//     a trivial read (see readModelDown: otherwise it is an outage): retried in process
//     RejectedRetries times with the same back-off, then nacked with NakWithDelay along
//     the back-off schedule; on its last allowed delivery (MaxDeliver) it is
//     dead-lettered and terminated instead, so that one bad document cannot stall the
//     stream.
//   - A panic while handling a message (in the handler, or in the batch it rode in,
//     which hands the panic to each of its handlers) is recovered by Recoverer, retried
//     like a rejected write and then nacked: the message comes back, and past
//     MaxDeliver it is dead-lettered.
//   - Dead-lettering records the message first and terminates it only then. When the
//     record fails, the message is nacked with the back-off delay instead: it comes
//     back and is tried again, so nothing leaves the stream unrecorded.
//
// Shutdown (the end of Consumer.Run's context) stops the fetching, not the work: the
// batch in hand, and the next one if it was already fetched (batches are fetched one
// ahead), go on under a context that shutdown does not cancel, bounded by
// ShutdownTimeout, and are acknowledged, so that a rolling deploy costs no delivery.
// What is still held after ShutdownTimeout (an outage) is nacked for the next replica.
// The Pipeline must outlive the consumers that feed it.
package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/nats-io/nats.go/jetstream"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.opentelemetry.io/otel/trace"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/deadletter"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/metrics"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/process"
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
	// WriteTimeout bounds the MongoDB work of one batch attempt; twice it bounds one
	// attempt at handling a message (the router's Timeout).
	WriteTimeout time.Duration
	// Concurrency bounds the MongoDB writes in flight per batch (applyingBatches of
	// them at once per Pipeline).
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
	// Pipeline, when set, is shared by the consumers of one process (package
	// partition's): their messages are applied together, in the batches of one router.
	// Nil: Run runs a pipeline of its own.
	Pipeline *Pipeline
	// Applied, when set, is called with the messages of each batch attempt whose
	// writes MongoDB confirmed, before they are acknowledged (tests record the order
	// of applies with it). It runs on the pipeline's batch: a panic there is the
	// batch's, and a call that blocks holds the batch.
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

// Consumer feeds one durable's messages to a Pipeline.
type Consumer struct {
	cfg     Config
	js      jetstream.JetStream
	store   *readmodel.Store
	dead    *deadletter.Store
	metrics *metrics.Metrics
	log     *slog.Logger
	ready   atomic.Bool
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
	pipe := c.cfg.Pipeline
	if pipe == nil {
		// Stopped only once the feed below has returned: the batches in hand need it.
		pipe = NewPipeline(c.cfg, c.store, c.metrics, c.log)
		pctx, stop := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan error, 1)
		go func() { done <- pipe.Run(pctx) }()
		defer func() {
			stop()
			if err := <-done; err != nil {
				c.log.Error("pipeline stopped", "error", err)
			}
		}()
	}
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
		start := time.Now()
		c.feed(work, pipe, msgs)
		c.metrics.BatchSeconds.Observe(time.Since(start).Seconds())
	}
	return nil
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
	t := time.NewTicker(c.keepAlive())
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

// keepAlive is how often unsettled messages are kept in progress.
func (c *Consumer) keepAlive() time.Duration { return max(c.cfg.AckWait/4, 10*time.Millisecond) }

// feed hands msgs to pipe, each once the one before it is queued for its write (so
// that they reach the batches in stream order), and returns once every one of them is
// settled. They are kept in progress all along.
func (c *Consumer) feed(work context.Context, pipe *Pipeline, msgs []jetstream.Msg) {
	keep := time.NewTicker(c.keepAlive())
	defer keep.Stop()
	sent := make([]*delivery, 0, len(msgs))
	for i, m := range msgs {
		d, err := newDelivery(work, m)
		if err != nil {
			// Not a JetStream message: nothing to ack, nothing to apply.
			c.log.Error("message without metadata", "subject", m.Subject(), "error", err)
			continue
		}
		if !c.send(pipe, d, keep.C, msgs) {
			c.log.Warn("pipeline stopped, releasing the batch", "messages", len(msgs)-i)
			release(msgs[i:])
			break
		}
		sent = append(sent, d)
		for waiting := true; waiting; {
			select {
			case <-d.queued:
				waiting = false
			case <-d.wm.Acked():
				waiting = false
			case <-d.wm.Nacked():
				waiting = false
			case <-keep.C:
				inProgress(msgs)
			}
		}
	}
	for _, d := range sent {
		for settled := false; !settled; {
			select {
			case <-d.wm.Acked():
				c.ack(d)
				settled = true
			case <-d.wm.Nacked():
				c.nak(work, d)
				settled = true
			case <-keep.C:
				inProgress(msgs)
			}
		}
	}
}

// send hands d to pipe; false if pipe has stopped.
func (c *Consumer) send(pipe *Pipeline, d *delivery, keep <-chan time.Time, msgs []jetstream.Msg) bool {
	for {
		select {
		case pipe.in <- d.wm:
			return true
		case <-pipe.done:
			return false
		case <-keep:
			inProgress(msgs)
		}
	}
}

// ack settles a message the router acknowledged: applied, or dead-lettered by the
// poison path, which marks it.
func (c *Consumer) ack(d *delivery) {
	if reason := d.wm.Metadata.Get(middleware.ReasonForPoisonedKey); reason != "" {
		if err := d.msg.TermWithReason("dead-lettered: " + reason); err != nil {
			// It comes back and is recorded again, over the same dead letter.
			c.log.Warn("term failed", "stream_seq", d.md.Sequence.Stream, "error", err)
		}
		return
	}
	if err := d.msg.Ack(); err != nil {
		// Applied but not acked: it comes back and is skipped as stale.
		c.log.Warn("ack failed", "stream_seq", d.md.Sequence.Stream, "error", err)
	}
}

// nak settles a message the router gave up on: redelivered along the back-off
// schedule, or at once when shutdown has ended its work (the next holder takes it).
// The durable has no MaxDeliver, so a nak never drops a message on its last delivery:
// it comes back past it and is dead-lettered then.
func (c *Consumer) nak(work context.Context, d *delivery) {
	if work.Err() != nil {
		_ = d.msg.Nak() // best effort: without it, it comes back after AckWait
		return
	}
	delay := nakDelay(c.cfg.BackOff, d.md.NumDelivered)
	c.log.Debug("message nacked, redelivering later", "stream_seq", d.md.Sequence.Stream, "request_id", d.requestID,
		"delivery", d.md.NumDelivered, "delay", delay)
	if err := d.msg.NakWithDelay(delay); err != nil {
		// Unsettled then: it comes back after AckWait.
		c.log.Warn("nak failed", "stream_seq", d.md.Sequence.Stream, "error", err)
	}
}

// release hands messages back at once, to come back now rather than after AckWait.
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
	MirrorGauges(ctx, c.cfg.StatsInterval, c.metrics, c.dead, func(ctx context.Context) (pending, ackPending, redelivered uint64, _ error) {
		info, err := cons.Info(ctx)
		if err != nil {
			return 0, 0, 0, err
		}
		return info.NumPending, uint64(info.NumAckPending), uint64(info.NumRedelivered), nil
	})
}

// MirrorGauges sets m's consumer gauges to what counts reads, and its dead-letter
// gauge to dead's count, at once and then every interval until ctx ends. Each read
// has 5 seconds; a gauge whose read fails keeps its value.
func MirrorGauges(ctx context.Context, interval time.Duration, m *metrics.Metrics, dead *deadletter.Store,
	counts func(ctx context.Context) (pending, ackPending, redelivered uint64, _ error)) {
	refresh := func() {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if pending, ackPending, redelivered, err := counts(qctx); err == nil {
			m.Pending.Set(float64(pending))
			m.AckPending.Set(float64(ackPending))
			m.Redelivered.Set(float64(redelivered))
		}
		if n, err := dead.Count(qctx); err == nil {
			m.DeadLetters.Set(float64(n))
		}
	}
	refresh()
	process.Every(ctx, interval, refresh)
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
