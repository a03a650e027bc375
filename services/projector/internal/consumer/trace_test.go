package consumer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/consumer"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/metrics"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/projtest"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/telemetry"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// appliedLine returns the "event applied" log line of event id, if written yet.
func (l *lockedBuffer) appliedLine(id uuid.UUID) map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range bytes.Split(l.b.Bytes(), []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(line, &m) == nil && m["msg"] == "event applied" && m["event_id"] == id.String() {
			return m
		}
	}
	return nil
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
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := env.JS.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}

	spans := tracetest.NewInMemoryExporter()
	logs := &lockedBuffer{}
	cfg := env.ConsumerConfig("traced")
	cfg.Tracer = telemetry.WithExporter("projector", spans).Tracer("test")
	c := consumer.New(cfg, env.JS, env.Store, metrics.New(prometheus.NewRegistry()),
		slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("consumer: %v", err)
		}
	}()

	var line map[string]any
	projtest.Eventually(t, 20*time.Second, func() (bool, string) {
		line = logs.appliedLine(ev.ID)
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
