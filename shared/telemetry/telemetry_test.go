package telemetry_test

import (
	"bytes"
	"context"
	"log/slog"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/outboxtodo/outboxtodo/shared/telemetry"
)

func TestFromEnvOffByDefaultOTLPWhenSet(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	ctx := context.Background()
	off, err := telemetry.FromEnv(ctx, "test", log)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := off.Provider.(noop.TracerProvider); !ok {
		t.Fatalf("provider %T without an endpoint, want the no-op one", off.Provider)
	}

	// Nothing listens there: export fails in the background, never at start or in a span.
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
	on, err := telemetry.FromEnv(ctx, "test", log)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := on.Provider.(*sdktrace.TracerProvider); !ok {
		t.Fatalf("provider %T with an endpoint, want the SDK's", on.Provider)
	}
	_, span := on.Tracer("test").Start(ctx, "span")
	if !span.SpanContext().IsValid() || !span.IsRecording() {
		t.Fatal("span not recorded with export on")
	}
	span.End()
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_ = on.Shutdown(sctx) // the export to a closed port fails; shutdown must still return
}

func TestExtractInjectLogAttrs(t *testing.T) {
	t.Parallel()
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	ctx := telemetry.Extract(context.Background(), tp, "vendor=x")
	if got, ts := telemetry.Inject(ctx); got != tp || ts != "vendor=x" {
		t.Fatalf("round trip: %q %q", got, ts)
	}
	spans := tracetest.NewInMemoryExporter()
	_, span := telemetry.WithExporter("test", spans).Tracer("test").Start(ctx, "child")
	span.End()
	got := spans.GetSpans()
	if len(got) != 1 || got[0].Parent.SpanID().String() != "00f067aa0ba902b7" || got[0].SpanContext.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Fatalf("child span %+v", got)
	}
	attrs := telemetry.LogAttrs(ctx)
	if len(attrs) != 2 || attrs[0].Value.String() != "4bf92f3577b34da6a3ce929d0e0e4736" || attrs[1].Value.String() != "00f067aa0ba902b7" {
		t.Fatalf("log attrs %v", attrs)
	}
	for _, bad := range []string{"", "garbage", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"} {
		if tp, _ := telemetry.Inject(telemetry.Extract(context.Background(), bad, "")); tp != "" || telemetry.LogAttrs(telemetry.Extract(context.Background(), bad, "")) != nil {
			t.Errorf("invalid traceparent %q kept", bad)
		}
	}
}
