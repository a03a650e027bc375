package consumer_test

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/projtest"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

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
