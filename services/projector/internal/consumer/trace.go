package consumer

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/project"
	"github.com/outboxtodo/outboxtodo/shared/telemetry"
)

// Message headers the publisher sets with the trace context of its publish span.
const (
	headerTraceParent = "traceparent"
	headerTraceState  = "tracestate"
)

// startApplySpans starts one span per item, a child of the trace context in its
// message headers (the publisher's span), or of the one in the event itself when the
// headers lack it (a message published by hand or by an older publisher).
func (p *Pipeline) startApplySpans(ctx context.Context, jobs []*job) []trace.Span {
	tracer := p.cfg.Tracer
	if tracer == nil {
		tracer = noop.NewTracerProvider().Tracer("")
	}
	spans := make([]trace.Span, len(jobs))
	for i, j := range jobs {
		it := j.d
		tp, ts := "", ""
		if h := it.msg.Headers(); h != nil {
			tp, ts = h.Get(headerTraceParent), h.Get(headerTraceState)
		}
		if tp == "" {
			tp, ts = it.event.Trace.TraceParent, it.event.Trace.TraceState
		}
		_, spans[i] = tracer.Start(telemetry.Extract(ctx, tp, ts), "apply "+it.event.Type,
			trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithAttributes(
				attribute.String("messaging.system", "nats"),
				attribute.String("messaging.message.id", it.event.ID.String()),
				attribute.Int64("messaging.nats.stream_sequence", int64(it.md.Sequence.Stream)),
				attribute.Int64("messaging.nats.delivery", int64(it.md.NumDelivered)),
				attribute.String("outbox.aggregate_id", it.event.AggregateID.String()),
				attribute.Int64("outbox.aggregate_version", it.event.Version),
				attribute.String("request_id", it.requestID),
			))
	}
	return spans
}

// endApplySpan ends the span of a job with the result of its write, and logs the
// result with the request id (the message's correlation id) and trace id at debug
// level. Failures are logged at warn level by the caller: per message when MongoDB
// rejected the write (with the request id), per batch when it is unreachable, which
// would otherwise log every message of every retry.
func (p *Pipeline) endApplySpan(ctx context.Context, span trace.Span, j *job, r project.Result) {
	it := j.d
	level, msg := slog.LevelDebug, "event applied"
	if r.Err != nil {
		span.RecordError(r.Err)
		span.SetStatus(codes.Error, "write failed")
		msg = "event not applied"
	} else {
		span.SetAttributes(attribute.String("outcome", r.Outcome.String()))
	}
	span.End()
	if !p.log.Enabled(ctx, level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("event_id", it.event.ID.String()), slog.String("event_type", it.event.Type),
		slog.String("aggregate_id", it.event.AggregateID.String()), slog.Int64("version", it.event.Version),
		slog.Uint64("stream_seq", it.md.Sequence.Stream), slog.String("request_id", it.requestID),
	}
	attrs = append(attrs, telemetry.LogAttrs(trace.ContextWithSpan(ctx, span))...)
	if r.Err != nil {
		attrs = append(attrs, slog.Any("error", r.Err))
	} else {
		attrs = append(attrs, slog.String("outcome", r.Outcome.String()))
	}
	p.log.LogAttrs(ctx, level, msg, attrs...)
}
