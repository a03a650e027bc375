package consumer_test

import (
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/consumer"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/metrics"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/projtest"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
	"github.com/outboxtodo/outboxtodo/shared/telemetry"
)

// The tests here show what the router's middleware adds: a panic recovered and
// retried, a rejected write retried before it is nacked, a handler that times out
// retried, and the request id as the message's correlation id in logs and spans; and
// that the apply span continues the trace of the message's header.

// redelivered is how many of the durable's messages are being redelivered.
func redelivered(t *testing.T, env *projtest.Env, durable string) int {
	t.Helper()
	info, err := env.ConsumerInfo(durable)
	if err != nil {
		t.Fatal(err)
	}
	return info.NumRedelivered
}

// retriedInProcess checks that a failure was retried in process: none of the
// durable's messages is being redelivered, and none was dead-lettered.
func retriedInProcess(t *testing.T, env *projtest.Env, failure string) {
	t.Helper()
	if n := redelivered(t, env, "projector"); n != 0 {
		t.Errorf("%d messages redelivered, want none: %s is retried in process", n, failure)
	}
	if n := len(deadLetters(t, env)); n != 0 {
		t.Errorf("%d dead letters, want none", n)
	}
}

// A batch panics once (here in the Applied hook, which runs inside it): Recoverer
// turns the panic into an error in each of its messages' handlers, Retry handles them
// again, and every message is applied and acknowledged on its first delivery.
func TestPanicRecoveredAndRetried(t *testing.T) {
	t.Parallel()
	env := projtest.New(t)
	w := publishedOwner(t, env, 5)

	var (
		mu        sync.Mutex
		panicked  []uint64 // the stream sequences of the batch that panicked
		afterward []uint64 // those applied by later batches
	)
	cfg := env.ConsumerConfig("projector")
	cfg.Applied = func(as []consumer.Applied) {
		mu.Lock()
		defer mu.Unlock()
		if panicked == nil {
			for _, a := range as {
				panicked = append(panicked, a.StreamSeq)
			}
			panic("test: the batch panics")
		}
		for _, a := range as {
			afterward = append(afterward, a.StreamSeq)
		}
	}
	env.Start(t, cfg)
	sharedtest.Eventually(t, 60*time.Second, env.Converged(w))
	sharedtest.Eventually(t, 30*time.Second, drained(env, "projector"))
	sharedtest.Eventually(t, 30*time.Second, func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		for _, seq := range panicked {
			if !slices.Contains(afterward, seq) {
				return false, fmt.Sprintf("stream sequence %d of the batch that panicked not applied again", seq)
			}
		}
		return len(panicked) > 0, "no batch panicked"
	})
	retriedInProcess(t, env, "the panic")
}

// A write MongoDB refuses is retried in process with back-off, RejectedRetries times
// per delivery, then nacked; on its last delivery it is dead-lettered after the same
// retries.
func TestRejectedWriteRetriedThenDeadLettered(t *testing.T) {
	t.Parallel()
	env := projtest.New(t)
	w := publishedOwner(t, env, 2)
	env.Publish(t, refusedTodo(t, w).Events...) // stream sequence len(w.Events)+1

	cfg := env.ConsumerConfig("projector")
	cfg.MaxDeliver = 2
	r := env.Start(t, cfg)
	seq := uint64(len(w.Events) + 1)
	sharedtest.Eventually(t, 60*time.Second, deadLettered(t, env, seq))
	sharedtest.Eventually(t, 30*time.Second, drained(env, "projector"))
	dl := deadLetters(t, env)[0]
	if dl.Deliveries != 2 {
		t.Errorf("dead-lettered on delivery %d, want its last, 2", dl.Deliveries)
	}
	want := float64(cfg.MaxDeliver * (1 + consumer.RejectedRetries))
	if n := testutil.ToFloat64(r.Metrics.Events.WithLabelValues(metrics.OutcomeFailed)); n < want {
		t.Errorf("%v failed attempts, want at least %v: %d deliveries of %d attempts each", n, want, cfg.MaxDeliver, 1+consumer.RejectedRetries)
	}
	sharedtest.Eventually(t, 30*time.Second, env.Converged(w))
}

// A batch stalls past the handler's Timeout (twice WriteTimeout; here the Applied hook
// inside it waits): the handlers waiting on it give up, count a failed attempt, and
// Retry queues their events again; once the stall ends everything is applied and
// acknowledged on its first delivery, nothing dead-lettered.
func TestHandlerTimeoutRetried(t *testing.T) {
	t.Parallel()
	env := projtest.New(t)
	w := publishedOwner(t, env, 5)

	cfg := env.ConsumerConfig("projector")
	cfg.WriteTimeout = time.Second
	stalled, resume := make(chan struct{}), make(chan struct{})
	var once sync.Once
	cfg.Applied = func([]consumer.Applied) {
		once.Do(func() { close(stalled); <-resume })
	}
	r := env.Start(t, cfg)
	select {
	case <-stalled:
	case <-time.After(30 * time.Second):
		t.Fatal("no batch applied")
	}
	sharedtest.Eventually(t, 30*time.Second, func() (bool, string) {
		n := testutil.ToFloat64(r.Metrics.Events.WithLabelValues(metrics.OutcomeFailed))
		return n > 0, "no handler has timed out yet"
	})
	close(resume)
	sharedtest.Eventually(t, 60*time.Second, env.Converged(w))
	sharedtest.Eventually(t, 30*time.Second, drained(env, "projector"))
	retriedInProcess(t, env, "a timeout")
}

// The event's request id is its message's correlation id: the log lines of its
// rejected writes and of its dead letter carry it, and so does its apply span.
func TestCorrelationIDInLogsAndSpans(t *testing.T) {
	t.Parallel()
	env := projtest.New(t)
	w := publishedOwner(t, env, 1)
	bad := refusedTodo(t, w).Events[0]
	bad.Trace.RequestID = "req-corr-1"
	env.Publish(t, bad)

	cfg := env.ConsumerConfig("correlated")
	cfg.MaxDeliver = 1
	spans, logs := startTraced(t, env, cfg)

	seq := uint64(len(w.Events) + 1)
	sharedtest.Eventually(t, 60*time.Second, deadLettered(t, env, seq))
	lines, err := logs.Lines()
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, l := range lines {
		if l["stream_seq"] == float64(seq) && (l["msg"] == "write rejected" || l["msg"] == "message dead-lettered") {
			if l["request_id"] != "req-corr-1" {
				t.Errorf("log line %v: want request_id req-corr-1", l)
			}
			found[l["msg"].(string)] = true
		}
	}
	if !found["write rejected"] || !found["message dead-lettered"] {
		t.Errorf("log lines of stream sequence %d found: %v, want its rejected write and its dead letter", seq, found)
	}
	n := 0
	for _, sp := range spans.GetSpans() {
		for _, a := range sp.Attributes {
			if a.Key == "request_id" && a.Value.AsString() == "req-corr-1" {
				n++
			}
		}
	}
	if n != 1+consumer.RejectedRetries {
		t.Errorf("%d apply spans carry request_id req-corr-1, want one per attempt, %d", n, 1+consumer.RejectedRetries)
	}
}

// TestApplySpanAndLogCarryTrace publishes an event the way the publisher does (its
// publish span's traceparent in the header, the API's request id in the event) and
// checks the last link of the chain: the projector's apply span is a child of the
// header's span, in the same trace, and its log line for the event carries the
// request id and trace id.
func TestApplySpanAndLogCarryTrace(t *testing.T) {
	t.Parallel()
	env := projtest.New(t)
	const (
		traceID     = "5b8efff798038103d269b633813fc60c"
		apiSpan     = "eee19b7ec3c1b174"
		publishSpan = "53995c3f42cd8ad8"
	)
	user := uuid.New()
	now := time.Now().UTC()
	ev, err := event.New(event.UserCreated, user, user, 1, now,
		event.TraceContext{TraceParent: "00-" + traceID + "-" + apiSpan + "-01", RequestID: "req-proj-1"},
		event.UserData{ID: user, Email: "trace@example.com", DisplayName: "T", Version: 1, CreatedAt: now, UpdatedAt: now})
	if err != nil {
		t.Fatal(err)
	}
	body, err := ev.Encode()
	if err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg(event.Subject(projtest.Prefix, ev))
	msg.Data = body
	msg.Header.Set(jetstream.MsgIDHeader, ev.ID.String())
	msg.Header.Set("traceparent", "00-"+traceID+"-"+publishSpan+"-01")
	ctx := sharedtest.Context(t, 30*time.Second)
	if _, err := env.JS.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}

	spans, logs := startTraced(t, env, env.ConsumerConfig("traced"))

	var line map[string]any
	sharedtest.Eventually(t, 20*time.Second, func() (bool, string) {
		line = appliedLine(logs, ev.ID)
		return line != nil, "no log line for the applied event"
	})
	if line["request_id"] != "req-proj-1" || line["trace_id"] != traceID || line["outcome"] != "applied" {
		t.Fatalf("log line %v: want request_id req-proj-1, trace_id %s, outcome applied", line, traceID)
	}
	got := spans.GetSpans()
	if len(got) != 1 {
		t.Fatalf("%d spans, want one apply span", len(got))
	}
	sp := got[0]
	if sp.Name != "apply user.created" || sp.SpanKind != trace.SpanKindConsumer ||
		sp.Parent.TraceID().String() != traceID || sp.Parent.SpanID().String() != publishSpan ||
		line["span_id"] != sp.SpanContext.SpanID().String() {
		t.Fatalf("span %q kind %s parent %s/%s (log span %v): want a consumer span below the publish span",
			sp.Name, sp.SpanKind, sp.Parent.TraceID(), sp.Parent.SpanID(), line["span_id"])
	}
}

// appliedLine returns the "event applied" log line of event id, if written yet.
func appliedLine(logs *sharedtest.LogBuffer, id uuid.UUID) map[string]any {
	lines, _ := logs.Lines() // a line cut mid-write is not the one sought
	for _, m := range lines {
		if m["msg"] == "event applied" && m["event_id"] == id.String() {
			return m
		}
	}
	return nil
}

// startTraced runs a consumer of cfg until the test ends, its spans recorded in
// memory and its log lines, debug ones included, in a buffer.
func startTraced(t *testing.T, env *projtest.Env, cfg consumer.Config) (*tracetest.InMemoryExporter, *sharedtest.LogBuffer) {
	t.Helper()
	spans := tracetest.NewInMemoryExporter()
	logs := &sharedtest.LogBuffer{}
	cfg.Tracer = telemetry.WithExporter("projector", spans).Tracer("test")
	traced := *env
	traced.Log = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	traced.Start(t, cfg)
	return spans, logs
}
