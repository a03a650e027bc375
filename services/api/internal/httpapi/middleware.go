package httpapi

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"

	"github.com/outboxtodo/outboxtodo/services/api/internal/auth"
	"github.com/outboxtodo/outboxtodo/services/api/internal/clientaddr"
	"github.com/outboxtodo/outboxtodo/services/api/internal/ratelimit"
	"github.com/outboxtodo/outboxtodo/services/api/internal/tokens"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/telemetry"
)

type ctxKey int

const (
	keyRequestID ctxKey = iota
	keyUserID
	keyToken
)

// RequestIDHeader carries the request id in both directions.
const RequestIDHeader = "X-Request-ID"

var saneRequestID = regexp.MustCompile(`^[A-Za-z0-9._:\-]{1,128}$`)

func requestID(ctx context.Context) string {
	id, _ := ctx.Value(keyRequestID).(string)
	return id
}

// traceContext is what an event written in ctx carries: the request id, and the W3C
// context of the request's server span (the client's own context when tracing is
// off, since a no-op span carries its parent's ids; none when the client sent none).
func traceContext(ctx context.Context) event.TraceContext {
	tp, ts := telemetry.Inject(ctx)
	return event.TraceContext{TraceParent: tp, TraceState: ts, RequestID: requestID(ctx)}
}

func userID(ctx context.Context) uuid.UUID {
	id, _ := ctx.Value(keyUserID).(uuid.UUID)
	return id
}

// currentToken is the token the request was authenticated with.
func currentToken(ctx context.Context) tokens.Token {
	t, _ := ctx.Value(keyToken).(tokens.Token)
	return t
}

// withRequestID accepts a sane X-Request-ID or makes one, echoes it, and records it
// on the request's span so that a trace can be found by request id.
func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(RequestIDHeader)
		if !saneRequestID.MatchString(id) {
			id = uuid.NewString()
		}
		w.Header().Set(RequestIDHeader, id)
		trace.SpanFromContext(r.Context()).SetAttributes(attribute.String("request_id", id))
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), keyRequestID, id)))
	})
}

// withTracing starts the server span of each request, a child of the client's W3C
// trace context when it sent a valid one. The span is named after the method until
// observe knows the route pattern; /health (liveness) is not traced.
func withTracing(tp trace.TracerProvider) func(http.Handler) http.Handler {
	return otelhttp.NewMiddleware("http.server",
		otelhttp.WithTracerProvider(tp),
		otelhttp.WithPropagators(telemetry.Propagator),
		otelhttp.WithMeterProvider(metricnoop.NewMeterProvider()), // metrics are ours, in Prometheus
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method }),
		otelhttp.WithFilter(func(r *http.Request) bool { return r.URL.Path != "/health" }))
}

// metrics are the request metrics, labelled by route pattern so that ids in paths do
// not explode the label space.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "http_requests_total", Help: "HTTP requests answered, by route pattern, method and status.",
		}, []string{"route", "method", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "http_request_duration_seconds", Help: "Time to answer HTTP requests, by route pattern and method.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "method"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// observe logs one access line and records the metrics of each request. It sits
// outside the recoverer so that a panicking request is logged with its 500.
func observe(log *slog.Logger, m *metrics) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
			next.ServeHTTP(ww, r)
			elapsed := time.Since(start)
			route := "unmatched"
			if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePattern() != "" {
				route = rc.RoutePattern()
			}
			status := ww.Status()
			if status == 0 {
				status = http.StatusOK
			}
			span := trace.SpanFromContext(r.Context())
			span.SetName(r.Method + " " + route)
			span.SetAttributes(attribute.String("http.route", route))
			m.requests.WithLabelValues(route, r.Method, strconv.Itoa(status)).Inc()
			m.duration.WithLabelValues(route, r.Method).Observe(elapsed.Seconds())
			attrs := []slog.Attr{
				slog.String("method", r.Method), slog.String("route", route), slog.String("path", r.URL.Path),
				slog.Int("status", status), slog.Float64("duration_ms", float64(elapsed.Microseconds())/1000),
				slog.Int("bytes", ww.BytesWritten()), slog.String("request_id", requestID(r.Context())),
			}
			if sc := span.SpanContext(); sc.IsValid() {
				attrs = append(attrs, slog.String("trace_id", sc.TraceID().String()))
			}
			log.LogAttrs(r.Context(), slog.LevelInfo, "request", attrs...)
		})
	}
}

// recoverer turns a panic into a logged 500 problem. http.ErrAbortHandler keeps its
// meaning: abort the response.
func recoverer(log *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer func() {
				v := recover()
				if v == nil {
					return
				}
				if v == http.ErrAbortHandler {
					panic(v)
				}
				log.ErrorContext(r.Context(), "panic", "panic", v, "stack", string(debug.Stack()),
					"request_id", requestID(r.Context()))
				writeError(w, r, log, errors.New("recovered from a panic"))
			}()
			next.ServeHTTP(w, r)
		})
	}
}

// timeout bounds the work of a request. Handlers pass the context to every call, so a
// slow database ends in context.DeadlineExceeded, which the error adapter answers
// with a 503 problem rather than an empty 504.
func timeout(d time.Duration) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx, cancel := context.WithTimeout(r.Context(), d)
			defer cancel()
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
}

// authenticate admits requests with a live bearer token and records it and its user.
func authenticate(tokenAuth *auth.Tokens, log *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
			if !ok || !strings.EqualFold(scheme, "Bearer") {
				writeError(w, r, log, newError(kindUnauthorized, "send the token from sign-up as Authorization: Bearer <token>"))
				return
			}
			invalid := func() {
				w.Header().Set("WWW-Authenticate", `Bearer realm="outboxtodo", error="invalid_token"`)
				writeError(w, r, log, newError(kindUnauthorized, "the bearer token is invalid, expired or revoked"))
			}
			token = strings.TrimSpace(token)
			if !tokens.WellFormed(token) {
				invalid()
				return
			}
			// Timing-safe without a constant-time comparison: see package tokens.
			t, err := tokenAuth.Authenticate(r.Context(), tokens.Hash(token))
			switch {
			case errors.Is(err, tokens.ErrNotFound):
				invalid()
				return
			case err != nil:
				writeError(w, r, log, err)
				return
			}
			ctx := context.WithValue(r.Context(), keyUserID, t.UserID)
			next.ServeHTTP(w, r.WithContext(context.WithValue(ctx, keyToken, t)))
		})
	}
}

func newLimiter(l RateLimit, maxKeys int) (*ratelimit.Keyed, error) {
	if l.PerSecond == 0 {
		return nil, nil
	}
	return ratelimit.New(ratelimit.Config{PerSecond: l.PerSecond, Burst: l.Burst, MaxKeys: maxKeys})
}

// registerLimiterMetrics exports how many buckets a limit keeps and how many it
// evicted while in use: a growing eviction count means RATE_LIMIT_KEYS is too small
// for the traffic, or a flood of addresses.
func registerLimiterMetrics(reg prometheus.Registerer, name string, l *ratelimit.Keyed) error {
	labels := prometheus.Labels{"limit": name}
	for _, c := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "http_rate_limit_buckets", Help: "Token buckets kept by a rate limit.", ConstLabels: labels,
		}, func() float64 { n, _ := l.Stats(); return float64(n) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "http_rate_limit_evictions_total", Help: "Buckets a rate limit dropped while still in use because it was full.", ConstLabels: labels,
		}, func() float64 { _, n := l.Stats(); return float64(n) }),
	} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// limitByAddress answers 429 to a client address that exceeds its rate. A request
// whose peer address cannot be read is let through: it did not come over a network.
func limitByAddress(l *ratelimit.Keyed, res clientaddr.Resolver, log *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if addr, ok := res.Addr(r); ok {
				d := l.Take("ip:" + clientaddr.Key(addr))
				setRateLimitHeaders(w, d)
				if !d.Allowed {
					rateLimited(w, r, log, d.RetryAfter, "client address")
					return
				}
			}
			next.ServeHTTP(w, r)
		})
	}
}

// limitByToken answers 429 to a bearer token that exceeds its rate. It runs after
// authenticate; the key is the token's hash, so no token is kept in memory.
func limitByToken(l *ratelimit.Keyed, log *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			d := l.Take("token:" + string(currentToken(r.Context()).Hash))
			setRateLimitHeaders(w, d)
			if !d.Allowed {
				rateLimited(w, r, log, d.RetryAfter, "token")
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// rateLimited answers 429 with Retry-After in whole seconds, rounded up so that a
// client that waits that long finds a token.
func rateLimited(w http.ResponseWriter, r *http.Request, log *slog.Logger, wait time.Duration, what string) {
	secs := max(1, int64(math.Ceil(wait.Seconds())))
	w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	writeError(w, r, log, newError(kindRateLimited, "too many requests for this %s; retry after %d s", what, secs))
}

// Rate-limit headers, in the form of the IETF RateLimit header fields draft before it
// merged them into one field (draft-ietf-httpapi-ratelimit-headers-06 and earlier),
// which most clients and gateways read: the bucket's size, the requests left in it, and
// the seconds until it is full again.
const (
	RateLimitLimitHeader     = "RateLimit-Limit"
	RateLimitRemainingHeader = "RateLimit-Remaining"
	RateLimitResetHeader     = "RateLimit-Reset"
)

// setRateLimitHeaders describes d unless a limit checked earlier in the request left
// fewer requests: the client is told about the limit it will meet first.
func setRateLimitHeaders(w http.ResponseWriter, d ratelimit.Decision) {
	h := w.Header()
	if prev, err := strconv.Atoi(h.Get(RateLimitRemainingHeader)); err == nil && prev <= d.Remaining {
		return
	}
	h.Set(RateLimitLimitHeader, strconv.Itoa(d.Limit))
	h.Set(RateLimitRemainingHeader, strconv.Itoa(d.Remaining))
	h.Set(RateLimitResetHeader, strconv.FormatInt(int64(math.Ceil(d.Reset.Seconds())), 10))
}

// endPreflight answers a CORS preflight that the CORS handler let through (so that
// the address limit counted it) with 204: it has its headers already.
func endPreflight(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, hasOrigin := r.Header["Origin"]
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" && hasOrigin {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}
