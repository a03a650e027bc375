package httpapi_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/outboxtodo/outboxtodo/services/api/internal/httpapi"
	"github.com/outboxtodo/outboxtodo/shared/telemetry"
)

// syncBuffer collects log lines written from the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range bytes.Split(bytes.TrimSpace(s.b.Bytes()), []byte("\n")) {
		var m map[string]any
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatalf("log line %s: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

// TestWriteCarriesServerSpan writes through the API with a client traceparent and
// X-Request-ID, and checks the chain's first link: the request's server span is a
// child of the client's span and named by route pattern, the outbox event carries
// that server span's context (same trace, the server span as parent) and the request
// id, and the access log line carries both ids.
func TestWriteCarriesServerSpan(t *testing.T) {
	t.Parallel()
	spans := tracetest.NewInMemoryExporter()
	tracing := telemetry.WithExporter("api", spans)
	logs := &syncBuffer{}
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
	for _, l := range logs.lines(t) {
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
