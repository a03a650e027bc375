package httpapi_test

import (
	"bufio"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outboxtodo/outboxtodo/services/api/internal/httpapi"
	"github.com/outboxtodo/outboxtodo/services/api/internal/problem"
	"github.com/outboxtodo/outboxtodo/services/api/internal/tokens"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

// publicRoutes are the only routes served without a token.
var publicRoutes = map[string]bool{
	"GET /health": true, "GET /health/databases": true, "GET /health/sync": true, "GET /openapi.json": true,
	"POST /v1/users": true, "POST /v1/sessions": true,
}

// TestEveryOtherRouteNeedsAToken walks the router, so that a route added later
// without authentication fails here.
func TestEveryOtherRouteNeedsAToken(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	token, _ := h.signUp()
	td := h.createTodo(token, map[string]string{"title": "t"})
	err := chi.Walk(h.srv.Config.Handler.(chi.Routes), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		if publicRoutes[method+" "+route] {
			return nil
		}
		path := strings.ReplaceAll(route, "{id}", td.ID)
		res := h.do(req{method: method, path: path, body: `{}`})
		if res.Status != http.StatusUnauthorized || res.problem(t).Type != problem.TypeURI("unauthorized") {
			t.Errorf("%s %s without a token: %d %s", method, route, res.Status, res.Body)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if h.count(`SELECT count(*) FROM outbox`) != 2 || h.count(`SELECT count(*) FROM api_tokens`) != 1 {
		t.Fatal("an unauthenticated request wrote something")
	}
}

// TestNoRouteRevealsAnotherUsersTodos has Bob try every route on Alice's data: by
// id, with versions, through list filters, with Alice's cursor and idempotency key.
// Each answer must be the one Bob gets for data that does not exist, and nothing of
// Alice's may change.
func TestNoRouteRevealsAnotherUsersTodos(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	alice, aliceUser := h.signUp()
	bob, _ := h.signUp()
	var aliceIDs []string
	for i := range 4 {
		aliceIDs = append(aliceIDs, h.createTodo(alice, map[string]any{
			"title": fmt.Sprint("alice ", i), "completed": i%2 == 0, "due": "2030-01-0" + fmt.Sprint(i+1) + "T00:00:00Z",
		}).ID)
	}
	h.createTodo(bob, map[string]string{"title": "bob's"})
	before := h.count(`SELECT count(*) FROM outbox WHERE partition_key = $1`, aliceUser.ID)
	missing := "0190a8a4-3c6e-7b2e-9a6e-3f0c2d1e4b5a"

	// By id, with any If-Match: a stale version would answer 412 if Bob could see
	// the todo; he must get 404 exactly as for a missing one.
	for _, method := range []string{"GET", "PATCH", "DELETE"} {
		for _, ifMatch := range []string{"", `"1"`, `"99"`, "*"} {
			r := req{method: method, token: bob}
			if method == "PATCH" {
				r.body = map[string]string{"title": "mine"}
			}
			if ifMatch != "" {
				r.header = map[string]string{"If-Match": ifMatch}
			}
			r.path = "/v1/todos/" + aliceIDs[0]
			other := h.do(r)
			r.path = "/v1/todos/" + missing
			none := h.do(r)
			po, pn := other.problem(t), none.problem(t)
			po.RequestID, pn.RequestID = "", ""
			po.Instance = strings.ReplaceAll(po.Instance, aliceIDs[0], missing)
			if other.Status != http.StatusNotFound || fmt.Sprint(po) != fmt.Sprint(pn) || other.Header.Get("ETag") != "" {
				t.Fatalf("%s If-Match %q: other's %d %s; missing %d %s", method, ifMatch, other.Status, other.Body, none.Status, none.Body)
			}
		}
	}

	// Every list filter shows Bob only his own todo, or nothing.
	for _, q := range []string{"", "?completed=true", "?completed=false", "?due_before=2031-01-01T00:00:00Z",
		"?due_after=2000-01-01T00:00:00Z", "?limit=1", "?limit=200&completed=true&due_after=2029-01-01T00:00:00Z"} {
		var page struct {
			Items []todo `json:"items"`
		}
		res := h.do(req{method: "GET", path: "/v1/todos" + q, token: bob})
		res.json(t, &page)
		for _, it := range page.Items {
			if it.Title != "bob's" {
				t.Fatalf("GET /v1/todos%s showed Bob %+v", q, it)
			}
		}
	}

	// Alice's cursors, under any filter, answer Bob exactly as a forged cursor does.
	var page struct {
		NextCursor *string `json:"next_cursor"`
	}
	for _, q := range []string{"?limit=1", "?limit=1&completed=true"} {
		h.do(req{method: "GET", path: "/v1/todos" + q, token: alice}).json(t, &page)
		if page.NextCursor == nil {
			t.Fatalf("alice %s: no next page", q)
		}
		stolen := h.do(req{method: "GET", path: "/v1/todos" + q + "&cursor=" + *page.NextCursor, token: bob})
		forged := h.do(req{method: "GET", path: "/v1/todos" + q + "&cursor=" + strings.Repeat("A", len(*page.NextCursor)), token: bob})
		ps, pf := stolen.problem(t), forged.problem(t)
		if stolen.Status != http.StatusBadRequest || ps.Type != problem.TypeURI("invalid-cursor") || ps.Detail != pf.Detail || ps.Type != pf.Type {
			t.Fatalf("Alice's cursor used by Bob: %d %s; forged: %s", stolen.Status, stolen.Body, forged.Body)
		}
		// It still works for Alice.
		if res := h.do(req{method: "GET", path: "/v1/todos" + q + "&cursor=" + *page.NextCursor, token: alice}); res.Status != http.StatusOK {
			t.Fatalf("alice's own cursor: %d %s", res.Status, res.Body)
		}
	}

	// Alice's Idempotency-Key replays nothing of hers to Bob.
	key := map[string]string{"Idempotency-Key": "shared-key"}
	first := h.do(req{method: "POST", path: "/v1/todos", token: alice, body: `{"title":"secret plan"}`, header: key})
	res := h.do(req{method: "POST", path: "/v1/todos", token: bob, body: `{"title":"secret plan"}`, header: key})
	var bobs todo
	res.json(t, &bobs)
	if first.Status != http.StatusCreated || res.Status != http.StatusCreated || res.Header.Get("Idempotent-Replayed") != "" || strings.Contains(string(res.Body), aliceUser.ID) {
		t.Fatalf("Bob with Alice's key: %d %v %s", res.Status, res.Header, res.Body)
	}
	h.do(req{method: "POST", path: "/v1/users/me/tokens", token: bob, header: map[string]string{"Idempotency-Key": "shared-key"}})

	// Bob revoking his token and deleting his account leave Alice untouched.
	h.do(req{method: "DELETE", path: "/v1/users/me/tokens/current", token: bob})
	if res := h.do(req{method: "GET", path: "/v1/users/me", token: alice}); res.Status != http.StatusOK {
		t.Fatalf("alice after Bob revoked his token: %d", res.Status)
	}

	if n := h.count(`SELECT count(*) FROM todos WHERE user_id = $1 AND version = 1 AND title LIKE 'alice %'`, aliceUser.ID); n != 4 {
		t.Fatalf("%d of Alice's todos unchanged, want 4", n)
	}
	if after := h.count(`SELECT count(*) FROM outbox WHERE partition_key = $1`, aliceUser.ID); after != before+1 { // her own create above
		t.Fatalf("%d events on Alice's data, want %d", after, before+1)
	}
}

func TestTokenRotationAndRevocation(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	old, u := h.signUp()

	res := h.do(req{method: "POST", path: "/v1/users/me/tokens", token: old})
	var issued struct {
		Token     string `json:"token"`
		CreatedAt string `json:"created_at"`
	}
	res.json(t, &issued)
	if res.Status != http.StatusCreated || !tokens.WellFormed(issued.Token) || issued.Token == old || issued.CreatedAt == "" {
		t.Fatalf("issue: %d %s", res.Status, res.Body)
	}
	if n := h.count(`SELECT count(*) FROM api_tokens WHERE user_id = $1 AND token_hash = sha256($2::bytea)`, u.ID, []byte(issued.Token)); n != 1 {
		t.Fatal("the new token's hash is not stored")
	}
	if res := h.do(req{method: "GET", path: "/v1/users/me", token: issued.Token}); res.Status != http.StatusOK {
		t.Fatalf("new token: %d", res.Status)
	}

	// Revoking the old token leaves the new one working.
	if res := h.do(req{method: "DELETE", path: "/v1/users/me/tokens/current", token: old}); res.Status != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", res.Status, res.Body)
	}
	for _, r := range []req{{method: "GET", path: "/v1/users/me"}, {method: "DELETE", path: "/v1/users/me/tokens/current"}, {method: "GET", path: "/v1/todos"}} {
		r.token = old
		res := h.do(r)
		if res.Status != http.StatusUnauthorized || !strings.Contains(res.Header.Get("WWW-Authenticate"), "invalid_token") {
			t.Fatalf("revoked token on %s %s: %d %v", r.method, r.path, res.Status, res.Header)
		}
	}
	if res := h.do(req{method: "GET", path: "/v1/users/me", token: issued.Token}); res.Status != http.StatusOK {
		t.Fatalf("new token after revoking the old: %d", res.Status)
	}

	// An idempotent issue replays without the token, which is never stored.
	key := map[string]string{"Idempotency-Key": "rotate-1"}
	a := h.do(req{method: "POST", path: "/v1/users/me/tokens", token: issued.Token, header: key})
	b := h.do(req{method: "POST", path: "/v1/users/me/tokens", token: issued.Token, header: key})
	var ra, rb struct {
		Token *string `json:"token"`
	}
	a.json(t, &ra)
	b.json(t, &rb)
	if a.Status != http.StatusCreated || b.Status != http.StatusCreated || ra.Token == nil || rb.Token != nil || b.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("idempotent issue:\n%d %s\n%d %s", a.Status, a.Body, b.Status, b.Body)
	}
	if n := h.count(`SELECT count(*) FROM api_tokens WHERE user_id = $1`, u.ID); n != 2 {
		t.Fatalf("%d tokens, want 2", n)
	}

	// A user holds at most tokens.MaxPerUser tokens.
	for range tokens.MaxPerUser - 2 {
		if res := h.do(req{method: "POST", path: "/v1/users/me/tokens", token: issued.Token}); res.Status != http.StatusCreated {
			t.Fatalf("issue below the cap: %d %s", res.Status, res.Body)
		}
	}
	res = h.do(req{method: "POST", path: "/v1/users/me/tokens", token: issued.Token})
	if res.Status != http.StatusConflict || res.problem(t).Type != problem.TypeURI("too-many-tokens") {
		t.Fatalf("issue over the cap: %d %s", res.Status, res.Body)
	}
	if n := h.count(`SELECT count(*) FROM api_tokens WHERE user_id = $1`, u.ID); n != tokens.MaxPerUser {
		t.Fatalf("%d tokens, want %d", n, tokens.MaxPerUser)
	}
	// Revoking one makes room again; a revoked token leaves no row behind.
	h.do(req{method: "DELETE", path: "/v1/users/me/tokens/current", token: *ra.Token})
	if res := h.do(req{method: "POST", path: "/v1/users/me/tokens", token: issued.Token}); res.Status != http.StatusCreated {
		t.Fatalf("issue after a revoke: %d %s", res.Status, res.Body)
	}
	if h.count(`SELECT count(*) FROM outbox WHERE event_type NOT IN ('user.created')`) != 0 {
		t.Fatal("token changes wrote events")
	}
}

func TestRateLimits(t *testing.T) {
	t.Parallel()
	// A rate this slow refills nothing while the test runs: only the burst counts.
	const slow = 0.001
	h := newHarness(t, func(o *httpapi.Options) {
		o.RateLimitPerToken = httpapi.RateLimit{PerSecond: slow, Burst: 3}
	})
	alice, _ := h.signUp()
	bob, _ := h.signUp()
	for i := range 3 {
		if res := h.do(req{method: "GET", path: "/v1/todos", token: alice}); res.Status != http.StatusOK {
			t.Fatalf("request %d within the burst: %d", i, res.Status)
		}
	}
	res := h.do(req{method: "GET", path: "/v1/users/me", token: alice})
	assertRateLimited(t, res)
	if res := h.do(req{method: "GET", path: "/v1/users/me", token: bob}); res.Status != http.StatusOK {
		t.Fatalf("another token shares the bucket: %d", res.Status)
	}
	// A second token of the same user has its own bucket; rotation is a way out,
	// bounded by tokens.MaxPerUser and the address limit.
	if res := h.do(req{method: "POST", path: "/v1/users/me/tokens", token: bob}); res.Status != http.StatusCreated {
		t.Fatalf("issue: %d", res.Status)
	}

	reg := prometheus.NewRegistry()
	byAddr := newHarness(t, func(o *httpapi.Options) {
		o.RateLimitPerIP = httpapi.RateLimit{PerSecond: slow, Burst: 2}
		o.Metrics = reg
	})
	for range 2 {
		byAddr.do(req{method: "GET", path: "/health", header: map[string]string{"X-Forwarded-For": rand.Text()}})
	}
	// X-Forwarded-For from an untrusted peer changes nothing; unauthenticated
	// routes and sign-up are limited too.
	assertRateLimited(t, byAddr.do(req{method: "GET", path: "/health", header: map[string]string{"X-Forwarded-For": "198.51.100.7"}}))
	assertRateLimited(t, byAddr.do(req{method: "POST", path: "/v1/users", body: map[string]string{"email": "x@example.com", "display_name": "x"}}))
	if n := byAddr.count(`SELECT count(*) FROM users`); n != 0 {
		t.Fatalf("a rate-limited sign-up wrote %d users", n)
	}
	// Every request came from one address: one bucket.
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP http_rate_limit_buckets Token buckets kept by a rate limit.
# TYPE http_rate_limit_buckets gauge
http_rate_limit_buckets{limit="ip"} 1
`), "http_rate_limit_buckets"); err != nil {
		t.Fatal(err)
	}

	// Behind a trusted proxy, each forwarded client has its own bucket.
	proxied := newHarness(t, func(o *httpapi.Options) {
		o.RateLimitPerIP = httpapi.RateLimit{PerSecond: slow, Burst: 1}
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	})
	xff := func(a string) map[string]string { return map[string]string{"X-Forwarded-For": a} }
	for _, a := range []string{"198.51.100.1", "198.51.100.2", "2001:db8:0:1::1"} {
		if res := proxied.do(req{method: "GET", path: "/health", header: xff(a)}); res.Status != http.StatusOK {
			t.Fatalf("first request of %s: %d", a, res.Status)
		}
	}
	assertRateLimited(t, proxied.do(req{method: "GET", path: "/health", header: xff("198.51.100.1")}))
	// Same IPv6 /64, same bucket; a client-written entry left of the real one is
	// ignored.
	assertRateLimited(t, proxied.do(req{method: "GET", path: "/health", header: xff("2001:db8:0:1::ffff")}))
	assertRateLimited(t, proxied.do(req{method: "GET", path: "/health", header: xff("203.0.113.50, 198.51.100.2")}))
}

func assertRateLimited(t *testing.T, res response) {
	t.Helper()
	p := res.problem(t)
	secs, err := strconv.Atoi(res.Header.Get("Retry-After"))
	if res.Status != http.StatusTooManyRequests || p.Type != problem.TypeURI("rate-limited") || err != nil || secs < 1 {
		t.Fatalf("want 429 rate-limited with Retry-After: %d %v %s", res.Status, res.Header, res.Body)
	}
}

// TestServerCutsOffSlowClients runs the server main builds, with short timeouts, and
// checks that clients which dribble their headers or body, or send huge headers, are
// answered or disconnected rather than holding a connection.
func TestServerCutsOffSlowClients(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	token, _ := h.signUp()
	srv := httpapi.NewServer(h.srv.Config.Handler, httpapi.ServerLimits{
		ReadHeaderTimeout: 300 * time.Millisecond,
		ReadTimeout:       time.Second,
		WriteTimeout:      5 * time.Second,
		IdleTimeout:       300 * time.Millisecond,
		MaxHeaderBytes:    4 << 10,
	}, sharedtest.Logger(t, slog.LevelInfo))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	dial := func(t *testing.T) net.Conn {
		t.Helper()
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		// Far beyond every server timeout: hitting it means the server never acted.
		if err := c.SetDeadline(time.Now().Add(20 * time.Second)); err != nil {
			t.Fatal(err)
		}
		return c
	}
	// closed reads until the server closes the connection and returns what it sent.
	closed := func(t *testing.T, c net.Conn) string {
		t.Helper()
		b, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("the server kept the connection open: %v (read %q)", err, b)
		}
		return string(b)
	}

	t.Run("slowloris headers", func(t *testing.T) {
		c := dial(t)
		if _, err := io.WriteString(c, "GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: "); err != nil {
			t.Fatal(err)
		}
		closed(t, c)
	})
	t.Run("slow body", func(t *testing.T) {
		c := dial(t)
		_, err := fmt.Fprintf(c, "POST /v1/todos HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"title\":", token)
		if err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(body), problem.TypeURI("request-timeout")) {
			t.Fatalf("slow body: %d %s", res.StatusCode, body)
		}
		closed(t, c)
	})
	t.Run("idle keep-alive", func(t *testing.T) {
		c := dial(t)
		if _, err := io.WriteString(c, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReader(c)
		res, err := http.ReadResponse(r, nil)
		if err != nil || res.StatusCode != http.StatusOK {
			t.Fatalf("health: %v %v", res, err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		_ = res.Body.Close()
		if b, err := io.ReadAll(r); err != nil {
			t.Fatalf("idle connection kept open: %v %q", err, b)
		}
	})
	t.Run("oversized headers", func(t *testing.T) {
		c := dial(t)
		_, err := fmt.Fprintf(c, "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", 16<<10))
		if err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		_ = res.Body.Close()
		if res.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("oversized headers: %d", res.StatusCode)
		}
	})

	// The server still serves well-behaved clients.
	ctx := sharedtest.Context(t, 10*time.Second)
	r, _ := http.NewRequestWithContext(ctx, "GET", "http://"+ln.Addr().String()+"/health", nil)
	res, err := http.DefaultClient.Do(r)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("health: %v %v", res, err)
	}
	_ = res.Body.Close()
}
