package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/nats-io/nats.go/jetstream"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/deadletter"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/metrics"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/project"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
)

// Metadata of the Watermill messages a Consumer emits: the JetStream metadata of the
// message they carry.
const (
	MetaStream     = "nats_stream"
	MetaSubject    = "nats_subject"
	MetaStreamSeq  = "nats_stream_seq"
	MetaDeliveries = "nats_deliveries" // 1 on the first delivery
)

// Names of the router's one subscription and of the poison path's topic; neither is
// a NATS subject.
const (
	topicEvents      = "events"
	topicDeadLetters = "dead_letters"
)

// RejectedRetries is how many times a write MongoDB rejected is retried in process,
// with back-off, before the message is nacked (or dead-lettered on its last delivery):
// a rejection caused by a passing condition on the server need not cost a delivery.
const RejectedRetries = 2

// Pipeline is a process's handling of the stream: a Watermill router over the
// messages its consumers emit, and the batches its handler queues events in.
type Pipeline struct {
	cfg     Config
	store   *readmodel.Store
	dead    *deadletter.Store
	metrics *metrics.Metrics
	log     *slog.Logger
	// in takes the consumers' messages to the router's subscription.
	in chan *message.Message
	// done is closed when Run returns.
	done  chan struct{}
	batch *batcher
	// server is the read model's server once detected (see projector).
	server atomic.Pointer[project.Server]
}

// NewPipeline builds a pipeline from the process-wide settings of cfg (MaxDeliver,
// BackOff, AckWait, WriteTimeout, Concurrency, Database, Applied, Tracer); Run starts it.
func NewPipeline(cfg Config, store *readmodel.Store, m *metrics.Metrics, log *slog.Logger) *Pipeline {
	p := &Pipeline{cfg: cfg, store: store, dead: deadletter.New(store.Control()), metrics: m, log: log,
		in: make(chan *message.Message), done: make(chan struct{})}
	p.batch = newBatcher(p.applyBatch)
	return p
}

// handlerTimeout bounds one attempt at handling a message: the batch in flight when
// it was queued and its own, each bounded by WriteTimeout.
func (p *Pipeline) handlerTimeout() time.Duration { return 2 * p.cfg.WriteTimeout }

// Run runs the router and the batches until ctx ends, then stops them. Stop it only
// once the consumers feeding it have returned: their batches in hand need it.
func (p *Pipeline) Run(ctx context.Context) error {
	defer close(p.done)
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: p.handlerTimeout()},
		quietHandlerErrors{watermill.NewSlogLogger(p.log.With("component", "router"))})
	if err != nil {
		return fmt.Errorf("router: %w", err)
	}
	poison, err := middleware.PoisonQueueWithFilter(deadLetters{p}, topicDeadLetters, isPoison)
	if err != nil {
		return fmt.Errorf("poison queue: %w", err)
	}
	router.AddMiddleware(
		middleware.CorrelationID,
		poison,
		middleware.Retry{
			// Bounded by shouldRetry: only an outage is retried for as long as the
			// message's context lives.
			MaxRetries: math.MaxInt32,
			// Waits of 200 ms, 800 ms, 3.2 s, then MaxInterval: with ShouldRetry set,
			// watermill v1.5.1 draws the back-off once more per retry (for
			// RetryParams.Delay) than the wait it makes.
			InitialInterval:     100 * time.Millisecond,
			Multiplier:          2,
			MaxInterval:         min(5*time.Second, max(p.cfg.AckWait/4, 10*time.Millisecond)),
			ShouldRetry:         shouldRetry,
			ResetContextOnRetry: true, // each attempt gets a Timeout of its own
		}.Middleware,
		middleware.Timeout(p.handlerTimeout()),
		middleware.Recoverer,
	)
	router.AddConsumerHandler("project", topicEvents, &subscriber{in: p.in, closing: make(chan struct{})}, p.handle)

	batchCtx, stopBatches := context.WithCancel(context.WithoutCancel(ctx))
	batchDone := make(chan struct{})
	go func() { defer close(batchDone); p.batch.run(batchCtx) }()
	// After the router: its handlers wait on the batches until they return.
	defer func() { stopBatches(); <-batchDone }()
	if err := router.Run(ctx); err != nil {
		return fmt.Errorf("router: %w", err)
	}
	return nil
}

// quietHandlerErrors logs the router's "Handler returned error" at debug level: every
// nack passes through it (a rejected write before its last delivery, a shutdown's
// nack), and the consumer already logs each outcome once, with the event's context,
// at the level it deserves. The router's other errors keep their level.
type quietHandlerErrors struct{ watermill.LoggerAdapter }

func (l quietHandlerErrors) Error(msg string, err error, fields watermill.LogFields) {
	if msg == "Handler returned error" {
		l.Debug(msg, fields.Add(watermill.LogFields{"error": err}))
		return
	}
	l.LoggerAdapter.Error(msg, err, fields)
}

func (l quietHandlerErrors) With(fields watermill.LogFields) watermill.LoggerAdapter {
	return quietHandlerErrors{l.LoggerAdapter.With(fields)}
}

// The handler's errors, for the middleware to tell apart.
type (
	// poisonError is dead-lettered at once.
	poisonError struct{ err error }
	// rejectedError is a write MongoDB refused; last is its last allowed delivery.
	rejectedError struct {
		err  error
		last bool
	}
	// transientError is an outage or a timeout: retried while the message's context lives.
	transientError struct{ err error }
)

func (e poisonError) Error() string    { return e.err.Error() }
func (e poisonError) Unwrap() error    { return e.err }
func (e rejectedError) Error() string  { return e.err.Error() }
func (e rejectedError) Unwrap() error  { return e.err }
func (e transientError) Error() string { return e.err.Error() }
func (e transientError) Unwrap() error { return e.err }

// errExhausted is the error of a message dead-lettered for its deliveries alone.
var errExhausted = errors.New("delivered more often than MaxDeliver allows: earlier deliveries ended unsettled " +
	"(a crash, a shutdown during an outage, or a dead-letter record that failed)")

func shouldRetry(params middleware.RetryParams) bool {
	var (
		poisoned  poisonError
		transient transientError
	)
	switch {
	case errors.As(params.Err, &poisoned):
		return false
	case errors.As(params.Err, &transient):
		return true
	}
	return params.RetryNum < RejectedRetries // a rejected write, or a recovered panic
}

func isPoison(err error) bool {
	var (
		poisoned poisonError
		rejected rejectedError
	)
	return errors.As(err, &poisoned) || (errors.As(err, &rejected) && rejected.last)
}

// handle queues the message's event for the next batch and returns its own outcome.
func (p *Pipeline) handle(msg *message.Message) error {
	d := deliveryFrom(msg.Context())
	if d == nil {
		return poisonError{errors.New("message without a JetStream delivery")}
	}
	// Whatever happens to it, the consumer's next message may go.
	defer d.markQueued()
	if d.decodeErr != nil {
		return poisonError{d.decodeErr}
	}
	n, err := strconv.ParseUint(msg.Metadata.Get(MetaDeliveries), 10, 64)
	if err != nil {
		return poisonError{fmt.Errorf("metadata %s: %w", MetaDeliveries, err)}
	}
	if p.cfg.MaxDeliver > 0 && n > uint64(p.cfg.MaxDeliver) {
		return poisonError{fmt.Errorf("%w (delivery %d, MaxDeliver %d)", errExhausted, n, p.cfg.MaxDeliver)}
	}
	r, err := p.batch.do(msg.Context(), d)
	switch {
	case err != nil:
		p.metrics.Events.WithLabelValues(metrics.OutcomeFailed).Inc()
		return transientError{fmt.Errorf("waiting for the batch: %w", err)}
	case r.panicked != nil:
		panic(r.panicked) // the batch's, handed over: Recoverer takes it here
	case r.err == nil:
		return nil
	case r.rejected:
		return rejectedError{err: r.err, last: p.cfg.MaxDeliver > 0 && n >= uint64(p.cfg.MaxDeliver)}
	}
	return transientError{r.err}
}

// delivery is one JetStream message on its way through the pipeline, in its
// Watermill message's context.
type delivery struct {
	msg       jetstream.Msg
	md        *jetstream.MsgMetadata
	event     event.Envelope
	decodeErr error
	requestID string // the correlation id
	wm        *message.Message
	// queued is closed once the handler has queued the event, or has returned.
	queued chan struct{}
	once   sync.Once
}

func (d *delivery) markQueued() { d.once.Do(func() { close(d.queued) }) }

type deliveryKey struct{}

func deliveryFrom(ctx context.Context) *delivery {
	d, _ := ctx.Value(deliveryKey{}).(*delivery)
	return d
}

// newDelivery makes m a Watermill message whose context is work.
func newDelivery(work context.Context, m jetstream.Msg) (*delivery, error) {
	md, err := m.Metadata()
	if err != nil {
		return nil, err
	}
	d := &delivery{msg: m, md: md, queued: make(chan struct{})}
	d.event, d.decodeErr = project.Decode(m.Data())
	d.wm = message.NewMessage(deadletter.ID(md.Stream, md.Sequence.Stream), m.Data())
	d.wm.Metadata.Set(MetaStream, md.Stream)
	d.wm.Metadata.Set(MetaSubject, m.Subject())
	d.wm.Metadata.Set(MetaStreamSeq, strconv.FormatUint(md.Sequence.Stream, 10))
	d.wm.Metadata.Set(MetaDeliveries, strconv.FormatUint(md.NumDelivered, 10))
	if d.decodeErr == nil && d.event.Trace.RequestID != "" {
		middleware.SetCorrelationID(d.event.Trace.RequestID, d.wm)
	}
	d.requestID = middleware.MessageCorrelationID(d.wm)
	d.wm.SetContext(context.WithValue(work, deliveryKey{}, d))
	return d, nil
}

// subscriber is the router's view of the consumers: the one subscription it makes
// receives every message they emit.
type subscriber struct {
	in      <-chan *message.Message
	closing chan struct{}
	once    sync.Once
}

// Subscribe forwards the consumers' messages until ctx ends or Close; a message taken
// and not handed over is nacked, so that its consumer settles it.
func (s *subscriber) Subscribe(ctx context.Context, _ string) (<-chan *message.Message, error) {
	out := make(chan *message.Message)
	go func() {
		defer close(out)
		for {
			var m *message.Message
			select {
			case <-ctx.Done():
				return
			case <-s.closing:
				return
			case m = <-s.in:
			}
			select {
			case out <- m:
			case <-ctx.Done():
				m.Nack()
				return
			case <-s.closing:
				m.Nack()
				return
			}
		}
	}()
	return out, nil
}

func (s *subscriber) Close() error {
	s.once.Do(func() { close(s.closing) })
	return nil
}

// deadLetters is the poison path's publisher: it records each message as a dead
// letter; the consumer terminates it once the router acknowledges it.
type deadLetters struct{ p *Pipeline }

// Publish records msgs, each under a WriteTimeout of its own: not the message's
// context, which the handler's Timeout may have spent, since a dead letter that cannot
// be recorded costs the message a delivery.
func (dl deadLetters) Publish(_ string, msgs ...*message.Message) error {
	var errs []error
	for _, m := range msgs {
		d := deliveryFrom(m.Context())
		if d == nil {
			errs = append(errs, errors.New("dead letter: message without a JetStream delivery"))
			continue
		}
		cause := errors.New(m.Metadata.Get(middleware.ReasonForPoisonedKey))
		ctx, cancel := context.WithTimeout(context.WithoutCancel(m.Context()), dl.p.cfg.WriteTimeout)
		err := dl.p.dead.Add(ctx, d.msg, cause)
		cancel()
		if err != nil {
			dl.p.metrics.Events.WithLabelValues(metrics.OutcomeFailed).Inc()
			dl.p.log.Warn("dead letter not recorded, redelivering later", "stream_seq", d.md.Sequence.Stream, "request_id", d.requestID,
				"delivery", d.md.NumDelivered, "error", err)
			errs = append(errs, err)
			continue
		}
		dl.p.metrics.Events.WithLabelValues(metrics.OutcomeDeadLettered).Inc()
		dl.p.log.Error("message dead-lettered", "stream_seq", d.md.Sequence.Stream, "request_id", d.requestID,
			"subject", d.msg.Subject(), "deliveries", d.md.NumDelivered, "error", cause)
	}
	return errors.Join(errs...)
}

func (deadLetters) Close() error { return nil }

func (p *Pipeline) database(ctx context.Context) (*mongo.Database, error) {
	if p.cfg.Database != "" {
		return p.store.Control().Client().Database(p.cfg.Database), nil
	}
	return p.store.Active(ctx)
}

// projector writes a batch into db on the write path of the read model's server,
// asked once (project.DetectServer) and then remembered.
func (p *Pipeline) projector(ctx context.Context, db *mongo.Database) (*project.Projector, error) {
	s := p.server.Load()
	if s == nil {
		detected, err := project.DetectServer(ctx, db.Client())
		if err != nil {
			return nil, err
		}
		p.log.Info("read model server detected", "server", detected)
		s = &detected
		p.server.Store(s)
	}
	opts := []project.Option{project.OnServer(*s)}
	if p.cfg.Database != "" {
		opts = append(opts, project.InsertFirst())
	}
	return project.New(db, p.cfg.Concurrency, opts...), nil
}
