package httpapi_test

import (
	"log/slog"
	"testing"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/outboxtodo/outboxtodo/services/api/internal/httpapi"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
	"github.com/outboxtodo/outboxtodo/shared/telemetry"
)

// TestWriteCarriesServerSpan writes through the API with a client traceparent and
// X-Request-ID, and checks the chain's first link: the request's server span is a
// child of the client's span and named by route pattern, the outbox event carries
// that server span's context (same trace, the server span as parent) and the request
// id, and the access log line carries both ids.
func TestWriteCarriesServerSpan(t *testing.T) {
	t.Parallel()
	spans := tracetest.NewInMemoryExporter()
	tracing := telemetry.WithExporter("api", spans)
	logs := &sharedtest.LogBuffer{}
	h := newHarness(t, func(o *httpapi.Options) {
		o.TracerProvider = tracing.Provider
		o.Log = slog.New(slog.NewJSONHandler(logs, nil))
	})
	token, _ := h.signUp()

	const (
		clientTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
		clientSpan  = "00f067aa0ba902b7"
	)
	res := h.do(req{method: "POST", path: "/v1/todos", token: token, body: `{"title":"traced"}`,
		header: map[string]string{"X-Request-ID": "req-trace-1", "traceparent": "00-" + clientTrace + "-" + clientSpan + "-01"}})
	var td todo
	res.json(t, &td)
	ev := h.outbox(td.ID)[0].Event

	var server *tracetest.SpanStub
	for _, s := range spans.GetSpans() {
		if s.Name == "POST /v1/todos" {
			server = &s
		}
	}
	if server == nil {
		t.Fatalf("no span named POST /v1/todos among %d spans", len(spans.GetSpans()))
	}
	if server.SpanKind != trace.SpanKindServer || server.Parent.TraceID().String() != clientTrace ||
		server.Parent.SpanID().String() != clientSpan || !server.Parent.IsRemote() {
		t.Fatalf("server span %s kind %s, parent %s/%s: want a server span below the client's", server.Name,
			server.SpanKind, server.Parent.TraceID(), server.Parent.SpanID())
	}
	want := "00-" + clientTrace + "-" + server.SpanContext.SpanID().String() + "-01"
	if ev.Trace.TraceParent != want || ev.Trace.RequestID != "req-trace-1" {
		t.Fatalf("event trace %+v, want traceparent %s and request id req-trace-1", ev.Trace, want)
	}

	found := false
	lines, err := logs.Lines()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range lines {
		if l["msg"] == "request" && l["route"] == "/v1/todos" && l["method"] == "POST" {
			found = l["request_id"] == "req-trace-1" && l["trace_id"] == clientTrace
			if !found {
				t.Fatalf("access log line %v: want request_id req-trace-1 and trace_id %s", l, clientTrace)
			}
		}
	}
	if !found {
		t.Fatal("no access log line for POST /v1/todos")
	}
}
