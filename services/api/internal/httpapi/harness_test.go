package httpapi_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/services/api/internal/apitest"
	"github.com/outboxtodo/outboxtodo/services/api/internal/httpapi"
	"github.com/outboxtodo/outboxtodo/services/api/internal/password"
	"github.com/outboxtodo/outboxtodo/services/api/internal/postgres"
	"github.com/outboxtodo/outboxtodo/services/api/internal/problem"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

// Every response recorded by a harness is validated against the OpenAPI document, so
// the document cannot drift from what the API answers.
var openAPI = sync.OnceValues(func() (routers.Router, error) {
	doc, err := openapi3.NewLoader().LoadFromData(httpapi.OpenAPI())
	if err != nil {
		return nil, err
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, err
	}
	return gorillamux.NewRouter(doc)
})

// harness is the real router on a real HTTP server over a fresh, migrated database.
type harness struct {
	t      *testing.T
	srv    *httptest.Server
	pool   *pgxpool.Pool
	dbURL  string
	router routers.Router
	users  *atomic.Int64
}

type harnessOpt func(*httpapi.Options)

func newHarness(t *testing.T, opts ...harnessOpt) *harness {
	t.Helper()
	pool, dbURL := dbtest.NewPool(t)
	return newHarnessOn(t, pool, dbURL, &atomic.Int64{}, opts...)
}

// replica is another API instance on h's database, with its own pool and store, as a
// second replica of the deployment would be.
func (h *harness) replica(opts ...harnessOpt) *harness {
	h.t.Helper()
	return newHarnessOn(h.t, apitest.Pool(h.t, h.dbURL), h.dbURL, h.users, opts...)
}

func newHarnessOn(t *testing.T, pool *pgxpool.Pool, dbURL string, users *atomic.Int64, opts ...harnessOpt) *harness {
	t.Helper()
	store := postgres.New(pool, true)
	o := httpapi.Options{
		Store:          store,
		Checks:         []httpapi.Check{{Name: "postgres", Timeout: 2 * time.Second, Fn: store.Ping}},
		Log:            sharedtest.Logger(t, slog.LevelInfo),
		Metrics:        prometheus.NewRegistry(),
		RequestTimeout: 10 * time.Second,
		MaxBodyBytes:   64 << 10,
		CursorKey:      []byte(rand.Text() + rand.Text()),
		// Cheap hashes: the tests check behaviour, not argon2id's cost.
		PasswordHash: password.Params{Memory: 64, Time: 1, Threads: 1},
	}
	for _, opt := range opts {
		opt(&o)
	}
	h, err := httpapi.New(o)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	router, err := openAPI()
	if err != nil {
		t.Fatalf("openapi: %v", err)
	}
	return &harness{t: t, srv: srv, pool: pool, dbURL: dbURL, router: router, users: users}
}

type response struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
}

func (r response) problem(t *testing.T) problem.Details {
	t.Helper()
	if ct := r.Header.Get("Content-Type"); ct != problem.ContentType {
		t.Fatalf("content type %q, want %s (status %d, body %s)", ct, problem.ContentType, r.Status, r.Body)
	}
	var p problem.Details
	r.json(t, &p)
	if p.Status != r.Status {
		t.Fatalf("problem status %d, response status %d", p.Status, r.Status)
	}
	return p
}

// req is one request: body is sent as application/json unless a Content-Type header
// says otherwise. A string body is sent verbatim; anything else is JSON-encoded.
type req struct {
	method, path, token string
	body                any
	header              map[string]string
	undocumented        bool // skip OpenAPI validation (unknown routes and methods)
}

func (h *harness) do(r req) response {
	h.t.Helper()
	var body io.Reader
	var raw []byte
	switch b := r.body.(type) {
	case nil:
	case string:
		raw = []byte(b)
	case []byte:
		raw = b
	default:
		var err error
		if raw, err = json.Marshal(b); err != nil {
			h.t.Fatal(err)
		}
	}
	if raw != nil {
		body = bytes.NewReader(raw)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, r.method, h.srv.URL+r.path, body)
	if err != nil {
		h.t.Fatal(err)
	}
	if raw != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	if r.token != "" {
		hr.Header.Set("Authorization", "Bearer "+r.token)
	}
	for k, v := range r.header {
		hr.Header.Set(k, v)
	}
	res, err := h.srv.Client().Do(hr)
	if err != nil {
		h.t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	defer res.Body.Close()
	out, err := io.ReadAll(res.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	if !r.undocumented {
		h.validate(hr, res, out)
	}
	return response{Status: res.StatusCode, Header: res.Header, Body: out}
}

// validate checks a response against the OpenAPI document: the operation must be
// documented, and the status, headers and body must match it.
func (h *harness) validate(hr *http.Request, res *http.Response, body []byte) {
	h.t.Helper()
	// The router matches on the server URL of the document.
	vr := hr.Clone(context.Background())
	vr.URL.Scheme, vr.URL.Host, vr.Host = "http", "localhost:8080", "localhost:8080"
	route, params, err := h.router.FindRoute(vr)
	if err != nil {
		h.t.Errorf("%s %s is not in the OpenAPI document: %v", hr.Method, hr.URL.Path, err)
		return
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request: vr, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
		},
		Status: res.StatusCode,
		Header: res.Header,
		Options: &openapi3filter.Options{
			IncludeResponseStatus: true,
			MultiError:            true,
		},
	}
	in.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		h.t.Errorf("%s %s answered %d against the OpenAPI document: %v\nbody: %s", hr.Method, hr.URL.Path, res.StatusCode, err, body)
	}
}

type user struct {
	ID          string `json:"id"`
	Email       string `json:"email"`
	DisplayName string `json:"display_name"`
	Version     int64  `json:"version"`
}

type todo struct {
	ID          string  `json:"id"`
	UserID      string  `json:"user_id"`
	Title       string  `json:"title"`
	Notes       *string `json:"notes"`
	Completed   bool    `json:"completed"`
	CompletedAt *string `json:"completed_at"`
	Due         *string `json:"due"`
	Priority    string  `json:"priority"`
	Version     int64   `json:"version"`
	CreatedAt   string  `json:"created_at"`
	UpdatedAt   string  `json:"updated_at"`
}

// signUp creates a user with a unique email and returns its token and user.
func (h *harness) signUp() (string, user) {
	h.t.Helper()
	email := fmt.Sprintf("user%d@example.com", h.users.Add(1))
	res := h.do(req{method: "POST", path: "/v1/users", body: map[string]string{"email": email, "display_name": "U"}})
	if res.Status != http.StatusCreated {
		h.t.Fatalf("sign-up: %d %s", res.Status, res.Body)
	}
	var out struct {
		User  user   `json:"user"`
		Token string `json:"token"`
	}
	res.json(h.t, &out)
	return out.Token, out.User
}

func (h *harness) createTodo(token string, body any) todo {
	h.t.Helper()
	res := h.do(req{method: "POST", path: "/v1/todos", token: token, body: body})
	if res.Status != http.StatusCreated {
		h.t.Fatalf("create todo: %d %s", res.Status, res.Body)
	}
	var t todo
	res.json(h.t, &t)
	return t
}

// count runs a COUNT query.
func (h *harness) count(sql string, args ...any) int {
	h.t.Helper()
	ctx := sharedtest.Context(h.t, 10*time.Second)
	var n int
	if err := h.pool.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
		h.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func (h *harness) exec(sql string, args ...any) {
	h.t.Helper()
	ctx := sharedtest.Context(h.t, 10*time.Second)
	if _, err := h.pool.Exec(ctx, sql, args...); err != nil {
		h.t.Fatalf("%s: %v", sql, err)
	}
}
