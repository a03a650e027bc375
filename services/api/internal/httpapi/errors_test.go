package httpapi_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outboxtodo/outboxtodo/services/api/internal/httpapi"
	"github.com/outboxtodo/outboxtodo/services/api/internal/problem"
	"github.com/outboxtodo/outboxtodo/services/api/internal/users"
	"github.com/outboxtodo/outboxtodo/shared/process"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

func TestErrorShapes(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	token, _ := h.signUp()
	td := h.createTodo(token, map[string]string{"title": "t"})
	todoPath := "/v1/todos/" + td.ID
	ct := func(v string) map[string]string { return map[string]string{"Content-Type": v} }

	cases := []struct {
		name     string
		req      req
		status   int
		slug     string
		pointers []string
	}{
		{"malformed json", req{method: "POST", path: "/v1/todos", body: `{"title": "x",}`}, 400, "malformed-json", nil},
		{"truncated json", req{method: "POST", path: "/v1/todos", body: `{"title": "x"`}, 400, "malformed-json", nil},
		{"empty body", req{method: "POST", path: "/v1/todos", body: ``, header: ct("application/json")}, 400, "malformed-json", nil},
		{"not an object", req{method: "POST", path: "/v1/todos", body: `["title"]`}, 400, "malformed-json", nil},
		{"null body", req{method: "POST", path: "/v1/todos", body: `null`}, 400, "malformed-json", nil},
		{"trailing data", req{method: "POST", path: "/v1/todos", body: `{"title":"x"} {}`}, 400, "malformed-json", nil},
		{"invalid utf-8", req{method: "POST", path: "/v1/todos", body: "{\"title\":\"\xff\xfe\"}"}, 400, "invalid-utf8", nil},
		{"unknown field", req{method: "POST", path: "/v1/todos", body: `{"title":"x","colour":"red"}`}, 400, "unknown-field", []string{"/colour"}},
		{"differently cased field", req{method: "POST", path: "/v1/todos", body: `{"Title":"x"}`}, 400, "unknown-field", []string{"/Title"}},
		{"wrong content type", req{method: "POST", path: "/v1/todos", body: `{"title":"x"}`, header: ct("text/plain")}, 415, "unsupported-media-type", nil},
		{"merge patch on POST", req{method: "POST", path: "/v1/todos", body: `{"title":"x"}`, header: ct("application/merge-patch+json")}, 415, "unsupported-media-type", nil},
		{"latin-1 charset", req{method: "POST", path: "/v1/todos", body: `{"title":"x"}`, header: ct("application/json; charset=iso-8859-1")}, 415, "unsupported-media-type", nil},
		{"too large", req{method: "POST", path: "/v1/todos", body: `{"title":"` + strings.Repeat("a", 70<<10) + `"}`}, 413, "body-too-large", nil},
		{"every todo field invalid", req{method: "POST", path: "/v1/todos", body: `{"title":"","notes":5,"completed":"yes","due":"tomorrow","priority":"urgent"}`},
			422, "validation-failed", []string{"/title", "/notes", "/completed", "/due", "/priority"}},
		{"title too long and null priority", req{method: "PATCH", path: todoPath, body: `{"title":"` + strings.Repeat("é", 201) + `","priority":null}`},
			422, "validation-failed", []string{"/title", "/priority"}},
		{"null title and completed", req{method: "PATCH", path: todoPath, body: `{"title":null,"completed":null}`},
			422, "validation-failed", []string{"/title", "/completed"}},
		{"control character", req{method: "POST", path: "/v1/todos", body: `{"title":"a\u0007b"}`}, 422, "validation-failed", []string{"/title"}},
		{"notes too long", req{method: "POST", path: "/v1/todos", body: `{"title":"x","notes":"` + strings.Repeat("n", 10001) + `"}`}, 422, "validation-failed", []string{"/notes"}},
		{"bad uuid", req{method: "GET", path: "/v1/todos/not-a-uuid"}, 400, "invalid-parameter", []string{"path:id"}},
		{"bad uuid on patch", req{method: "PATCH", path: "/v1/todos/123", body: `{}`}, 400, "invalid-parameter", []string{"path:id"}},
		{"bad query params", req{method: "GET", path: "/v1/todos?limit=0&completed=maybe&due_before=soon&sort=title"}, 400, "invalid-parameter",
			[]string{"query:sort", "query:limit", "query:completed", "query:due_before"}},
		{"limit too large", req{method: "GET", path: "/v1/todos?limit=201"}, 400, "invalid-parameter", []string{"query:limit"}},
		{"repeated query param", req{method: "GET", path: "/v1/todos?limit=1&limit=2"}, 400, "invalid-parameter", []string{"query:limit"}},
		{"missing todo", req{method: "GET", path: "/v1/todos/" + uuid.NewString()}, 404, "not-found", nil},
		{"unknown route", req{method: "GET", path: "/v1/nothing", undocumented: true}, 404, "not-found", nil},
		{"method not allowed", req{method: "PUT", path: todoPath, body: `{}`, undocumented: true}, 405, "method-not-allowed", nil},
		{"stale If-Match", req{method: "PATCH", path: todoPath, body: `{"title":"y"}`, header: map[string]string{"If-Match": `"7"`}}, 412, "precondition-failed", nil},
		{"weak If-Match", req{method: "DELETE", path: todoPath, header: map[string]string{"If-Match": `W/"1"`}}, 412, "precondition-failed", nil},
		{"malformed If-Match", req{method: "PATCH", path: todoPath, body: `{"title":"y"}`, header: map[string]string{"If-Match": `1`}}, 400, "invalid-header", []string{"header:If-Match"}},
		{"bad Idempotency-Key", req{method: "POST", path: "/v1/todos", body: `{"title":"x"}`, header: map[string]string{"Idempotency-Key": strings.Repeat("k", 256)}}, 400, "invalid-header", nil},
		{"email taken", req{method: "POST", path: "/v1/users", token: "-", body: `{"email":"USER1@example.com","display_name":"again"}`}, 409, "email-taken", nil},
		{"bad sign-up", req{method: "POST", path: "/v1/users", token: "-", body: `{"email":"Ada <ada@example.com>","display_name":"   "}`},
			422, "validation-failed", []string{"/email", "/display_name"}},
		{"missing sign-up fields", req{method: "POST", path: "/v1/users", token: "-", body: `{}`}, 422, "validation-failed", []string{"/email", "/display_name"}},
		{"email too long", req{method: "POST", path: "/v1/users", token: "-", body: `{"email":"` + strings.Repeat("a", 250) + `@x.io","display_name":"x"}`}, 422, "validation-failed", []string{"/email"}},
		{"null email on patch", req{method: "PATCH", path: "/v1/users/me", body: `{"email":null}`}, 422, "validation-failed", []string{"/email"}},
		{"email taken on patch", req{method: "PATCH", path: "/v1/users/me", body: `{"email":"user2@example.com"}`}, 409, "email-taken", nil},
	}
	h.signUp() // user2@example.com, taken for the last case
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := c.req
			switch r.token {
			case "":
				r.token = token
			case "-":
				r.token = ""
			}
			res := h.do(r)
			p := res.problem(t)
			if res.Status != c.status || p.Type != problem.TypeURI(c.slug) || p.Title == "" || p.Instance == "" || p.RequestID == "" {
				t.Fatalf("%d %s, want %d %s", res.Status, res.Body, c.status, c.slug)
			}
			var pointers []string
			for _, e := range p.Errors {
				pointers = append(pointers, e.Pointer)
				if e.Detail == "" {
					t.Errorf("pointer %s without detail", e.Pointer)
				}
			}
			slices.Sort(pointers)
			want := slices.Clone(c.pointers)
			slices.Sort(want)
			if !slices.Equal(pointers, want) {
				t.Fatalf("pointers %v, want %v (%s)", pointers, want, res.Body)
			}
		})
	}
	if res := h.do(req{method: "PUT", path: todoPath, token: token, undocumented: true}); res.Header.Get("Allow") == "" {
		t.Fatal("405 without Allow")
	}
	// Nothing above wrote anything: one user's todo at version 1, events for it only.
	if c := h.count(`SELECT count(*) FROM outbox WHERE event_type LIKE 'todo.%'`); c != 1 {
		t.Fatalf("%d todo events after rejected requests", c)
	}
}

func TestRequestIDTraceAndCORS(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(o *httpapi.Options) { o.CORSAllowedOrigins = []string{"https://app.example.com"} })
	token, _ := h.signUp()
	tp := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	res := h.do(req{method: "POST", path: "/v1/todos", token: token, body: `{"title":"traced"}`,
		header: map[string]string{"X-Request-ID": "req-123", "traceparent": tp, "tracestate": "vendor=x"}})
	if res.Header.Get("X-Request-ID") != "req-123" {
		t.Fatalf("request id not echoed: %v", res.Header)
	}
	var td todo
	res.json(t, &td)
	ev := h.outbox(td.ID)[0].Event
	if ev.Trace.RequestID != "req-123" || ev.Trace.TraceParent != tp || ev.Trace.TraceState != "vendor=x" {
		t.Fatalf("trace %+v", ev.Trace)
	}

	res = h.do(req{method: "POST", path: "/v1/todos", token: token, body: `{"title":"untraced"}`,
		header: map[string]string{"X-Request-ID": "bad id\u00e9", "traceparent": "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "tracestate": "x=y"}})
	res.json(t, &td)
	ev = h.outbox(td.ID)[0].Event
	if id := res.Header.Get("X-Request-ID"); id == "" || id == "bad id\u00e9" || ev.Trace.RequestID != id || ev.Trace.TraceParent != "" || ev.Trace.TraceState != "" {
		t.Fatalf("insane ids kept: %q %+v", id, ev.Trace)
	}

	pre := h.do(req{method: "OPTIONS", path: "/v1/todos", undocumented: true, header: map[string]string{
		"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "Authorization, Idempotency-Key, If-Match"}})
	if pre.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" || !strings.Contains(strings.ToLower(pre.Header.Get("Access-Control-Allow-Headers")), "idempotency-key") {
		t.Fatalf("preflight: %d %v", pre.Status, pre.Header)
	}
	res = h.do(req{method: "GET", path: "/v1/todos/" + td.ID, token: token, header: map[string]string{"Origin": "https://app.example.com"}})
	if !strings.Contains(res.Header.Get("Access-Control-Expose-Headers"), "Etag") && !strings.Contains(res.Header.Get("Access-Control-Expose-Headers"), "ETag") {
		t.Fatalf("exposed headers: %v", res.Header)
	}
	res = h.do(req{method: "GET", path: "/health", header: map[string]string{"Origin": "https://evil.example.com"}})
	if res.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatal("foreign origin allowed")
	}
}

// slowStore wraps a real store and blocks User until release is closed or the
// request's context ends, to hold a request in flight.
type slowStore struct {
	httpapi.Store
	entered chan struct{}
	release chan struct{}
	panics  bool
}

func (s *slowStore) User(ctx context.Context, id uuid.UUID) (users.User, error) {
	if s.panics {
		panic("boom")
	}
	s.entered <- struct{}{}
	select {
	case <-s.release:
	case <-ctx.Done():
		return users.User{}, ctx.Err()
	}
	return s.Store.User(ctx, id)
}

// newSlowHarness is a harness whose store is a slowStore, returned with it.
func newSlowHarness(t *testing.T, opts ...harnessOpt) (*harness, *slowStore) {
	t.Helper()
	var slow *slowStore
	h := newHarness(t, append([]harnessOpt{func(o *httpapi.Options) {
		slow = &slowStore{Store: o.Store, entered: make(chan struct{}, 1), release: make(chan struct{})}
		o.Store = slow
	}}, opts...)...)
	return h, slow
}

func TestTimeoutAndPanicAnswerProblems(t *testing.T) {
	t.Parallel()
	h, slow := newSlowHarness(t, func(o *httpapi.Options) { o.RequestTimeout = 200 * time.Millisecond })
	token, _ := h.signUp()
	res := h.do(req{method: "GET", path: "/v1/users/me", token: token})
	if p := res.problem(t); res.Status != http.StatusServiceUnavailable || p.Type != problem.TypeURI("timeout") || res.Header.Get("Retry-After") == "" {
		t.Fatalf("timeout: %d %v %s", res.Status, res.Header, res.Body)
	}
	slow.panics = true
	res = h.do(req{method: "GET", path: "/v1/users/me", token: token})
	if p := res.problem(t); res.Status != http.StatusInternalServerError || p.Type != problem.TypeURI("internal") || strings.Contains(string(res.Body), "boom") {
		t.Fatalf("panic: %d %s", res.Status, res.Body)
	}
}

// TestGracefulShutdownDrainsInFlight cancels the server's context while a request is
// in flight and checks that the request still completes and Serve returns cleanly.
func TestGracefulShutdownDrainsInFlight(t *testing.T) {
	t.Parallel()
	h, slow := newSlowHarness(t)
	token, _ := h.signUp()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := &http.Server{Handler: h.srv.Config.Handler, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- process.Serve(ctx, srv, ln, 10*time.Second) }()

	type result struct {
		status int
		body   string
		err    error
	}
	done := make(chan result, 1)
	go func() {
		rctx, rcancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer rcancel()
		r, _ := http.NewRequestWithContext(rctx, "GET", "http://"+ln.Addr().String()+"/v1/users/me", nil)
		r.Header.Set("Authorization", "Bearer "+token)
		res, err := http.DefaultClient.Do(r)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		done <- result{status: res.StatusCode, body: string(b), err: err}
	}()

	select {
	case <-slow.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("request never reached the handler")
	}
	cancel() // SIGTERM
	// New connections are refused once shutdown has begun.
	sharedtest.Eventually(t, 10*time.Second, func() (bool, string) {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second)
		if err != nil {
			return true, ""
		}
		_ = c.Close()
		return false, "listener still accepting after shutdown began"
	})
	close(slow.release)
	r := <-done
	if r.err != nil || r.status != http.StatusOK || !strings.Contains(r.body, `"email"`) {
		t.Fatalf("in-flight request: %+v", r)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return")
	}
}

func TestNewRejectsDuplicateMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	o := httpapi.Options{Log: slog.New(slog.DiscardHandler), Metrics: reg, CursorKey: make([]byte, 32)}
	if _, err := httpapi.New(o); err != nil {
		t.Fatal(err)
	}
	var are prometheus.AlreadyRegisteredError
	if _, err := httpapi.New(o); !errors.As(err, &are) {
		t.Fatalf("second registration: %v", err)
	}
}
