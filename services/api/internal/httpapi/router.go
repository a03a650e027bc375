// Package httpapi is the public REST API: the chi router, its middleware (request ids
// and trace context, access log and metrics, panic recovery, rate limits, timeouts,
// CORS, bearer authentication), the handlers, the one adapter that renders every error
// as RFC 9457 problem+json, the OpenAPI document that describes it all, and the HTTP
// server's limits against slow and oversized requests.
package httpapi

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/cors"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/outboxtodo/outboxtodo/services/api/internal/auth"
	"github.com/outboxtodo/outboxtodo/services/api/internal/clientaddr"
	"github.com/outboxtodo/outboxtodo/services/api/internal/consistency"
	"github.com/outboxtodo/outboxtodo/services/api/internal/idempotency"
	"github.com/outboxtodo/outboxtodo/services/api/internal/password"
	"github.com/outboxtodo/outboxtodo/services/api/internal/ratelimit"
	"github.com/outboxtodo/outboxtodo/services/api/internal/syncstatus"
	"github.com/outboxtodo/outboxtodo/services/api/internal/todos"
	"github.com/outboxtodo/outboxtodo/services/api/internal/tokens"
	"github.com/outboxtodo/outboxtodo/services/api/internal/users"
	"github.com/outboxtodo/outboxtodo/shared/event"
)

// Store is what the handlers need from storage.
type Store interface {
	auth.Store
	Now() time.Time
	CreateUser(ctx context.Context, u users.User, passwordHash string, token tokens.Token, trace event.TraceContext, idem *idempotency.Record) error
	CreateToken(ctx context.Context, token tokens.Token, idem *idempotency.Record) error
	CreateSignInToken(ctx context.Context, token tokens.Token) ([][]byte, error)
	Tokens(ctx context.Context, owner uuid.UUID, now time.Time) ([]tokens.Token, error)
	RevokeToken(ctx context.Context, owner, id uuid.UUID) ([]byte, error)
	Credentials(ctx context.Context, email string) (uuid.UUID, string, error)
	PasswordHash(ctx context.Context, id uuid.UUID) (string, error)
	SetPassword(ctx context.Context, id uuid.UUID, old, hash string) error
	User(ctx context.Context, id uuid.UUID) (users.User, error)
	UpdateUser(ctx context.Context, id uuid.UUID, ifMatch int64, p users.Patch, trace event.TraceContext) (users.User, error)
	DeleteUser(ctx context.Context, id uuid.UUID, ifMatch int64, trace event.TraceContext) (int64, error)
	CreateTodo(ctx context.Context, t todos.Todo, trace event.TraceContext, idem *idempotency.Record) (int64, error)
	Todo(ctx context.Context, owner, id uuid.UUID) (todos.Todo, error)
	ListTodos(ctx context.Context, owner uuid.UUID, f todos.Filter, after uuid.UUID, limit int) ([]todos.Todo, error)
	UpdateTodo(ctx context.Context, owner, id uuid.UUID, ifMatch int64, p todos.Patch, trace event.TraceContext) (todos.Todo, int64, error)
	DeleteTodo(ctx context.Context, owner, id uuid.UUID, ifMatch int64, trace event.TraceContext) (int64, int64, error)
	StatsVersion(ctx context.Context, owner uuid.UUID) (int64, error)
	Idempotency(ctx context.Context, scope, key string) (idempotency.Record, bool, error)
}

// Options configure the router.
type Options struct {
	Store              Store
	Checks             []Check // run by GET /health/databases
	Log                *slog.Logger
	Metrics            prometheus.Registerer
	RequestTimeout     time.Duration
	MaxBodyBytes       int64
	CORSAllowedOrigins []string // none: no CORS headers at all
	// CursorKey keys the MAC of pagination cursors (at least todos.MinCursorKeyLen
	// bytes). Replicas must share it for cursors to work across them.
	CursorKey []byte
	// RateLimitPerIP limits each client address (see TrustedProxies), on every route;
	// RateLimitPerToken limits each bearer token, on the authenticated routes. A zero
	// PerSecond disables a limit.
	RateLimitPerIP    RateLimit
	RateLimitPerToken RateLimit
	// RateLimitKeys bounds the buckets each limit keeps (default 100000).
	RateLimitKeys int
	// TrustedProxies are the peers whose X-Forwarded-For is believed.
	TrustedProxies []netip.Prefix
	// ReadModel serves the leaderboard and stats; SyncReport serves /health/sync.
	// Without them those routes answer 503 read-model-unavailable.
	ReadModel  ReadModel
	SyncReport func(ctx context.Context) syncstatus.Report
	// LeaderboardCacheTTL is how long one ranking serves every leaderboard request of
	// this replica; 0 reads it per request.
	LeaderboardCacheTTL time.Duration
	// SyncReportTTL is how long one sync report serves every /health/sync request of
	// this replica; 0 gathers one per request.
	SyncReportTTL time.Duration
	// TokenTTL is the lifetime of new tokens (0: they never expire); a request may ask
	// for an earlier expiry, never a later one.
	TokenTTL time.Duration
	// AuthCacheTTL is how long a looked-up token is trusted without asking the store
	// again, and so how late a revocation made on another replica takes effect here;
	// 0 looks every token up. AuthCacheSize bounds the tokens cached (0: the default).
	AuthCacheTTL  time.Duration
	AuthCacheSize int
	// TracerProvider receives a server span per request; nil traces nothing (the
	// client's trace context still reaches the events).
	TracerProvider trace.TracerProvider
	// PasswordHash are the argon2id parameters of new password hashes (zero:
	// password.Default); PasswordHashConcurrency bounds the hashes run at once
	// (0: 2).
	PasswordHash            password.Params
	PasswordHashConcurrency int
	// SignInPerEmail and SignInPerAddress are the sign-in attempts allowed per email
	// address and per client address within SignInWindow (0: 10, 30 and 15 minutes).
	SignInPerEmail   int
	SignInPerAddress int
	SignInWindow     time.Duration
	// ReadYourWritesWait bounds how long a read of the read model waits for the write
	// its Consistency-Token names; 0 does not wait (the answer says whether it is
	// fresh).
	ReadYourWritesWait time.Duration
	// PublicURL replaces the server URL of the OpenAPI document served; empty keeps
	// the document's own.
	PublicURL string
}

// RateLimit is a sustained rate and a burst.
type RateLimit struct {
	PerSecond float64
	Burst     int
}

//go:embed openapi.json
var openAPIDoc []byte

// OpenAPI returns the OpenAPI document of the API.
func OpenAPI() []byte { return openAPIDoc }

// openAPIFor returns the document with publicURL as its only server; empty keeps the
// document's own.
func openAPIFor(publicURL string) ([]byte, error) {
	if publicURL == "" {
		return openAPIDoc, nil
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		return nil, fmt.Errorf("openapi document: %w", err)
	}
	servers, err := json.Marshal([]map[string]string{{"url": publicURL, "description": "this deployment"}})
	if err != nil {
		return nil, fmt.Errorf("openapi servers: %w", err)
	}
	doc["servers"] = servers
	out, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("openapi document: %w", err)
	}
	return out, nil
}

var allowedMethods = []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}

// CORS: what a browser may send and read. corsMaxAge (seconds) lets it cache a
// preflight's answer; browsers cap it (Chromium at 2 hours).
var (
	corsAllowedHeaders = []string{"Authorization", "Content-Type", "If-Match", "If-None-Match", idempotency.Header,
		consistency.TokenHeader, RequestIDHeader, "traceparent", "tracestate"}
	corsExposedHeaders = []string{"ETag", "Location", RequestIDHeader, "Retry-After", "Idempotent-Replayed", "WWW-Authenticate",
		ProjectionSeqHeader, ProjectionWatermarkHeader, consistency.TokenHeader, consistency.StateHeader,
		RateLimitLimitHeader, RateLimitRemainingHeader, RateLimitResetHeader}
)

const corsMaxAge = 600

// handlerFunc is a handler that returns its error to the one adapter that renders it.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

type api struct {
	store       Store
	tokens      *auth.Tokens
	passwords   *password.Hasher
	signIns     signInLimits
	addrs       clientaddr.Resolver
	rywWait     time.Duration
	tokenTTL    time.Duration
	readModel   ReadModel
	rankings    *rankings
	syncReports *syncReports
	checks      []Check
	log         *slog.Logger
	maxBody     int64
	cursors     *todos.Cursors
}

func (a *api) handle(fn handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := fn(w, r); err != nil {
			writeError(w, r, a.log, err)
		}
	}
}

// New returns the API's handler.
func New(o Options) (http.Handler, error) {
	m, err := newMetrics(o.Metrics)
	if err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	cursors, err := todos.NewCursors(o.CursorKey)
	if err != nil {
		return nil, fmt.Errorf("CursorKey: %w", err)
	}
	if o.RateLimitKeys == 0 {
		o.RateLimitKeys = 100_000
	}
	perIP, perToken, err := newRateLimits(o)
	if err != nil {
		return nil, err
	}
	a, err := newAPI(o, cursors)
	if err != nil {
		return nil, err
	}
	doc, err := openAPIFor(o.PublicURL)
	if err != nil {
		return nil, err
	}
	r := chi.NewRouter()
	a.useMiddleware(r, o, m, perIP)
	a.route(r, doc, perToken)
	return r, nil
}

// newRateLimits builds the limits per client address and per token, each nil when
// off, and registers their metrics.
func newRateLimits(o Options) (perIP, perToken *ratelimit.Keyed, err error) {
	perIP, err = newLimiter(o.RateLimitPerIP, o.RateLimitKeys)
	if err != nil {
		return nil, nil, fmt.Errorf("RateLimitPerIP: %w", err)
	}
	perToken, err = newLimiter(o.RateLimitPerToken, o.RateLimitKeys)
	if err != nil {
		return nil, nil, fmt.Errorf("RateLimitPerToken: %w", err)
	}
	for name, l := range map[string]*ratelimit.Keyed{"ip": perIP, "token": perToken} {
		if l == nil {
			continue
		}
		if err := registerLimiterMetrics(o.Metrics, name, l); err != nil {
			return nil, nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return perIP, perToken, nil
}

// newAPI validates the options the handlers use, fills in their defaults, and builds
// what the handlers share.
func newAPI(o Options, cursors *todos.Cursors) (*api, error) {
	tokenAuth, err := auth.New(o.Store, auth.Config{TTL: o.AuthCacheTTL, Size: o.AuthCacheSize, Log: o.Log})
	if err != nil {
		return nil, err
	}
	if o.TokenTTL < 0 {
		return nil, fmt.Errorf("TokenTTL %s: must not be negative", o.TokenTTL)
	}
	if o.PasswordHash == (password.Params{}) {
		o.PasswordHash = password.Default
	}
	if o.PasswordHashConcurrency == 0 {
		o.PasswordHashConcurrency = 2
	}
	passwords, err := password.New(o.PasswordHash, o.PasswordHashConcurrency)
	if err != nil {
		return nil, fmt.Errorf("PasswordHash: %w", err)
	}
	signIns, err := newSignInLimits(o.SignInPerEmail, o.SignInPerAddress, o.SignInWindow, o.RateLimitKeys)
	if err != nil {
		return nil, err
	}
	if o.ReadYourWritesWait < 0 {
		return nil, fmt.Errorf("ReadYourWritesWait %s: must not be negative", o.ReadYourWritesWait)
	}
	addrs := clientaddr.Resolver{Trusted: o.TrustedProxies}
	a := &api{store: o.Store, tokens: tokenAuth, tokenTTL: o.TokenTTL, readModel: o.ReadModel, checks: o.Checks, log: o.Log,
		maxBody: o.MaxBodyBytes, cursors: cursors, passwords: passwords, signIns: signIns, addrs: addrs,
		rywWait:  o.ReadYourWritesWait,
		rankings: &rankings{rm: o.ReadModel, ttl: o.LeaderboardCacheTTL, now: time.Now}}
	if o.SyncReport != nil {
		a.syncReports = &syncReports{report: o.SyncReport, ttl: o.SyncReportTTL, now: time.Now, log: o.Log}
	}
	return a, nil
}

// useMiddleware puts the middleware every route goes through on r, in order; perIP
// is the limit per client address, nil when off.
func (a *api) useMiddleware(r chi.Router, o Options, m *metrics, perIP *ratelimit.Keyed) {
	if o.TracerProvider == nil {
		o.TracerProvider = noop.NewTracerProvider()
	}
	r.Use(withTracing(o.TracerProvider), withRequestID, observe(o.Log, m))
	corsOn := len(o.CORSAllowedOrigins) > 0
	if corsOn {
		// First, so that every answer carries its headers, 429s and 5xx included (a
		// browser shows a CORS error instead of an answer without them). Preflights
		// pass through to the address limit, so that they count against it, and end
		// after it (endPreflight).
		r.Use(cors.Handler(cors.Options{
			AllowedOrigins:     o.CORSAllowedOrigins,
			AllowedMethods:     allowedMethods,
			AllowedHeaders:     corsAllowedHeaders,
			ExposedHeaders:     corsExposedHeaders,
			MaxAge:             corsMaxAge,
			OptionsPassthrough: true,
		}))
	}
	r.Use(recoverer(o.Log))
	if perIP != nil {
		// Before authentication, so that token guesses do not escape it.
		r.Use(limitByAddress(perIP, a.addrs, o.Log))
	}
	if corsOn {
		r.Use(endPreflight)
	}
	r.Use(timeout(o.RequestTimeout))
}

// route puts the handlers on r: doc is the OpenAPI document served, perToken the
// limit per token of the authenticated routes, nil when off.
func (a *api) route(r chi.Router, doc []byte, perToken *ratelimit.Keyed) {
	r.NotFound(a.handle(func(w http.ResponseWriter, r *http.Request) error {
		return newError(kindNotFound, "no route for %s %s", r.Method, r.URL.Path)
	}))
	r.MethodNotAllowed(a.handle(func(w http.ResponseWriter, req *http.Request) error {
		for _, method := range allowedMethods {
			if r.Match(chi.NewRouteContext(), method, req.URL.Path) {
				w.Header().Add("Allow", method)
			}
		}
		return newError(kindMethodNotAllowed, "%s is not allowed on %s; see the Allow header", req.Method, req.URL.Path)
	}))

	r.Get("/health", a.handle(func(w http.ResponseWriter, r *http.Request) error {
		return writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}))
	r.Get("/health/databases", a.handle(a.healthDatabases))
	r.Get("/health/sync", a.handle(a.healthSync))
	r.Get("/openapi.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(doc)
	})
	r.Post("/v1/users", a.handle(a.signUp))
	r.Post("/v1/sessions", a.handle(a.signIn))
	r.Group(func(r chi.Router) {
		r.Use(authenticate(a.tokens, a.log))
		if perToken != nil {
			// After authentication: only real tokens take a bucket, so garbage
			// tokens cannot crowd the map (the address limit covers those).
			r.Use(limitByToken(perToken, a.log))
		}
		r.Get("/v1/users/me", a.handle(a.getMe))
		r.Patch("/v1/users/me", a.handle(a.patchMe))
		r.Delete("/v1/users/me", a.handle(a.deleteMe))
		r.Put("/v1/users/me/password", a.handle(a.setPassword))
		r.Post("/v1/users/me/tokens", a.handle(a.issueToken))
		r.Get("/v1/users/me/tokens", a.handle(a.listTokens))
		r.Delete("/v1/users/me/tokens/current", a.handle(a.revokeCurrentToken))
		r.Delete("/v1/users/me/tokens/{id}", a.handle(a.revokeToken))
		r.Get("/v1/users/me/stats", a.handle(a.stats))
		r.Get("/v1/leaderboard", a.handle(a.leaderboard))
		r.Post("/v1/todos", a.handle(a.createTodo))
		r.Get("/v1/todos", a.handle(a.listTodos))
		r.Get("/v1/todos/{id}", a.handle(a.getTodo))
		r.Patch("/v1/todos/{id}", a.handle(a.patchTodo))
		r.Delete("/v1/todos/{id}", a.handle(a.deleteTodo))
	})
}

// writeJSON encodes v before writing anything, so an encoding failure can still be
// answered with a problem.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode response: %w", err)
	}
	writeRaw(w, status, b)
	return nil
}

func writeRaw(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(body)
	_, _ = w.Write([]byte("\n"))
}
