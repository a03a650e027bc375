// Package telemetry sets up OpenTelemetry tracing for the services and carries the W3C
// trace context between HTTP requests, outbox rows, message headers and log lines.
//
// Exporting is off by default: the tracer provider is then OpenTelemetry's no-op one,
// whose spans cost a few allocations and record nothing, while trace context still
// flows (a no-op span carries its parent's ids). Setting OTEL_EXPORTER_OTLP_ENDPOINT
// (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) turns on OTLP over HTTP, configured by the
// standard OTEL_EXPORTER_OTLP_* and OTEL_TRACES_SAMPLER variables that the exporter
// and SDK read themselves.
//
// The propagator is W3C Trace Context only: it is the format the event envelope
// stores (event.TraceContext) and the one every hop speaks.
package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Propagator reads and writes traceparent and tracestate.
var Propagator propagation.TextMapPropagator = propagation.TraceContext{}

// Tracing owns a tracer provider and its exporter.
type Tracing struct {
	Provider trace.TracerProvider
	shutdown func(context.Context) error
}

// FromEnv returns OTLP/HTTP tracing when an OTLP endpoint is configured, and no-op
// tracing otherwise. Nothing connects here: the exporter sends in the background and
// drops spans (never blocks requests) when the collector is away.
func FromEnv(ctx context.Context, service string, log *slog.Logger) (*Tracing, error) {
	endpoint := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	if endpoint == "" {
		endpoint = os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT")
	}
	if endpoint == "" {
		log.Info("tracing export off (set OTEL_EXPORTER_OTLP_ENDPOINT to send spans)")
		return Noop(), nil
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("otlp trace exporter: %w", err)
	}
	// The endpoint may carry a token in its user part or query: it is not logged.
	log.Info("tracing export on", "protocol", "otlp/http", "endpoint_set", true)
	return newSDK(service, sdktrace.WithBatcher(exp)), nil
}

// Noop is tracing that records nothing.
func Noop() *Tracing {
	return &Tracing{Provider: noop.NewTracerProvider(), shutdown: func(context.Context) error { return nil }}
}

// WithExporter is tracing that hands every ended span to exp at once; tests pass an
// in-memory exporter.
func WithExporter(service string, exp sdktrace.SpanExporter) *Tracing {
	return newSDK(service, sdktrace.WithSyncer(exp))
}

func newSDK(service string, processor sdktrace.TracerProviderOption) *Tracing {
	tp := sdktrace.NewTracerProvider(processor,
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", service))))
	return &Tracing{Provider: tp, shutdown: tp.Shutdown}
}

// Tracer is the named tracer of the provider.
func (t *Tracing) Tracer(name string) trace.Tracer { return t.Provider.Tracer(name) }

// Shutdown flushes the spans still buffered; call it with a bounded context.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if err := t.shutdown(ctx); err != nil {
		return fmt.Errorf("flush spans: %w", err)
	}
	return nil
}

// Extract returns ctx with the remote span context of traceparent and tracestate as
// parent; invalid or empty values leave ctx as it is.
func Extract(ctx context.Context, traceParent, traceState string) context.Context {
	if traceParent == "" {
		return ctx
	}
	carrier := propagation.MapCarrier{"traceparent": traceParent}
	if traceState != "" {
		carrier["tracestate"] = traceState
	}
	return Propagator.Extract(ctx, carrier)
}

// Inject returns the traceparent and tracestate of the span in ctx; both are empty
// when ctx holds no valid span context.
func Inject(ctx context.Context) (traceParent, traceState string) {
	carrier := propagation.MapCarrier{}
	Propagator.Inject(ctx, carrier)
	return carrier["traceparent"], carrier["tracestate"]
}

// LogAttrs are the trace_id and span_id of the span in ctx, for log lines; none when
// ctx holds no valid span context.
func LogAttrs(ctx context.Context) []slog.Attr {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return nil
	}
	return []slog.Attr{slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String())}
}
