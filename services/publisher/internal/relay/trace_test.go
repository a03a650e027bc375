package relay

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/outboxtodo/outboxtodo/services/publisher/internal/lease"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/metrics"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/outboxdb"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/pubtest"
	"github.com/outboxtodo/outboxtodo/shared/outbox"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
	"github.com/outboxtodo/outboxtodo/shared/telemetry"
)

// TestPublishSpanAndRequestID publishes an event written with a trace context and a
// request id, and checks the second link of the chain: the publish span is a child of
// the event's traceparent, the message's traceparent header is that span's context
// (same trace), and the publisher's debug log line names the request id and trace id.
func TestPublishSpanAndRequestID(t *testing.T) {
	t.Parallel()
	ctx := sharedtest.Context(t, 30*time.Second)
	e := newEnv(t)

	const (
		apiTrace = "0af7651916cd43dd8448eb211c80319c"
		apiSpan  = "b7ad6b7169203331"
	)
	ev := pubtest.Event(t, uuid.New(), uuid.New(), 1, "")
	ev.Trace.TraceParent = "00-" + apiTrace + "-" + apiSpan + "-01"
	ev.Trace.TraceState = "vendor=x"
	ev.Trace.RequestID = "req-pub-1"
	e.write(ctx, t, ev)

	spans := tracetest.NewInMemoryExporter()
	logs := &sharedtest.LogBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	o := opts(10)
	o.Tracer = telemetry.WithExporter("publisher", spans).Tracer("test")
	js, _ := e.connect(t)
	mgr := lease.New(e.pool, "traced", outbox.Partitions, 10*time.Second, log)
	r := &replica{leases: mgr, relay: New(e.pool, js, mgr, nil, o, metrics.New(prometheus.NewRegistry()), log)}
	r.takeAll(ctx, t)
	r.drainAll(ctx, t)

	got := spans.GetSpans()
	if len(got) != 1 {
		t.Fatalf("%d spans, want one publish span", len(got))
	}
	sp := got[0]
	if sp.Name != "publish todo.created" || sp.SpanKind != trace.SpanKindProducer ||
		sp.Parent.TraceID().String() != apiTrace || sp.Parent.SpanID().String() != apiSpan {
		t.Fatalf("span %q kind %s parent %s/%s: want a producer span below the API's span", sp.Name, sp.SpanKind,
			sp.Parent.TraceID(), sp.Parent.SpanID())
	}

	s, err := e.js.Stream(ctx, streamName)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := s.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	want := "00-" + apiTrace + "-" + sp.SpanContext.SpanID().String() + "-01"
	if h := msg.Header.Get(HeaderTraceParent); h != want || msg.Header.Get(HeaderTraceState) != "vendor=x" {
		t.Fatalf("message traceparent %q tracestate %q, want %q and vendor=x", h, msg.Header.Get(HeaderTraceState), want)
	}

	lines, _ := logs.Lines() // a line cut mid-write is not the one sought
	for _, m := range lines {
		if m["msg"] == "event published" {
			if m["request_id"] != "req-pub-1" || m["trace_id"] != apiTrace || m["event_id"] != ev.ID.String() {
				t.Fatalf("log line %v: want request_id req-pub-1, trace_id %s and event_id %s", m, apiTrace, ev.ID)
			}
			return
		}
	}
	t.Fatalf("no event published log line in %s", logs.String())
}

// TestTracingOffCostsNoMoreThanTheMessage checks that with tracing off (the default,
// a no-op tracer) a row's publish span adds to building its message only what reading
// its stored trace context costs: no attributes formatted for a span that records
// nothing, and the stored traceparent and tracestate kept without being rendered
// again. The message still carries them.
func TestTracingOffCostsNoMoreThanTheMessage(t *testing.T) {
	const tp, ts = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "vendor=x"
	rw := outboxdb.Row{EventID: uuid.New(), AggregateType: "todo", AggregateID: uuid.New(), Owner: uuid.New(), Version: 3,
		EventType: "todo.created", Payload: []byte(`{}`), TraceParent: new(string), TraceState: new(string)}
	*rw.TraceParent, *rw.TraceState = tp, ts
	r := New(nil, nil, nil, nil, Options{SubjectPrefix: "events"}, nil, slog.Default())
	ctx := context.Background()

	_, msg := r.traced(ctx, rw)
	if got := msg.Header.Get(HeaderTraceParent); got != tp || msg.Header.Get(HeaderTraceState) != ts {
		t.Fatalf("traceparent %q tracestate %q, want the stored %q and %q", got, msg.Header.Get(HeaderTraceState), tp, ts)
	}
	message := fewestAllocs(func() { r.message(rw) })
	extract := fewestAllocs(func() { telemetry.Extract(ctx, tp, ts) })
	traced := fewestAllocs(func() { r.traced(ctx, rw) })
	// Starting the span takes six: its name, options, context and the span itself. The
	// attributes and a rendered trace context took eight more.
	if traced > message+extract+6 {
		t.Fatalf("a traced message takes %v allocations with tracing off; its message %v, reading the trace context %v", traced, message, extract)
	}
}

// fewestAllocs is the fewest allocations of one call of f, over a hundred calls. Noise
// only adds allocations, never removes them: testing.AllocsPerRun counts every
// allocation of the process, so a goroutine of an earlier test still winding down can
// add some, and under the race detector sync.Pool drops a share of what is put back at
// random, so a call that takes from a pool now and then allocates anew (with -race,
// message takes 16 or 21 and traced 27 or 32). An average over many calls carries that
// noise; the fewest is f's own.
func fewestAllocs(f func()) float64 {
	fewest := testing.AllocsPerRun(1, f)
	for range 99 {
		fewest = min(fewest, testing.AllocsPerRun(1, f))
	}
	return fewest
}
