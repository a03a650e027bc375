package httpapi_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/outboxtodo/outboxtodo/services/api/internal/consistency"
	"github.com/outboxtodo/outboxtodo/services/api/internal/httpapi"
	"github.com/outboxtodo/outboxtodo/services/api/internal/problem"
)

const appOrigin = "http://localhost:5173"

func withCORS(o *httpapi.Options) { o.CORSAllowedOrigins = []string{appOrigin} }

func exposed(res response) []string {
	var out []string
	for _, h := range strings.Split(res.Header.Get("Access-Control-Expose-Headers"), ",") {
		out = append(out, http.CanonicalHeaderKey(strings.TrimSpace(h)))
	}
	return out
}

// TestCORSOnEveryAnswer: a browser gets the CORS headers on every answer, the 429 of
// the address limit and a 503 included, so it can read the problem instead of
// reporting a CORS error; preflights are cached and count against the address limit.
func TestCORSOnEveryAnswer(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withCORS, func(o *httpapi.Options) { o.RateLimitPerIP = httpapi.RateLimit{PerSecond: 0.001, Burst: 4} })
	origin := map[string]string{"Origin": appOrigin}
	preflight := req{method: "OPTIONS", path: "/v1/users/me/stats", undocumented: true, header: map[string]string{
		"Origin": appOrigin, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization,consistency-token,if-none-match",
	}}
	res := h.do(preflight)
	if res.Status != http.StatusNoContent || res.Header.Get("Access-Control-Allow-Origin") != appOrigin ||
		res.Header.Get("Access-Control-Max-Age") != "600" ||
		!strings.Contains(strings.ToLower(res.Header.Get("Access-Control-Allow-Headers")), "consistency-token") {
		t.Fatalf("preflight: %d %v", res.Status, res.Header)
	}
	token, _ := h.signUp() // 2 of 4
	// 3 of 4: a 503 (no read model here) with the CORS headers and every header a
	// client reads exposed.
	res = h.do(req{method: "GET", path: "/v1/users/me/stats", token: token, header: origin})
	if res.Status != http.StatusServiceUnavailable || res.Header.Get("Access-Control-Allow-Origin") != appOrigin {
		t.Fatalf("503: %d %v", res.Status, res.Header)
	}
	for _, name := range []string{"ETag", "Location", "X-Request-ID", "Retry-After", "X-Projection-Sequence", "X-Projection-Watermark",
		"Consistency-Token", "Consistency", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"} {
		if !slices.Contains(exposed(res), http.CanonicalHeaderKey(name)) { // names are case-insensitive
			t.Errorf("%s is not exposed: %q", name, res.Header.Get("Access-Control-Expose-Headers"))
		}
	}
	if res := h.do(preflight); res.Status != http.StatusNoContent { // 4 of 4
		t.Fatalf("preflight 4: %d", res.Status)
	}
	// The address's budget is spent by preflights as by requests.
	res = h.do(preflight)
	if res.Status != http.StatusTooManyRequests || res.Header.Get("Access-Control-Allow-Origin") != appOrigin {
		t.Fatalf("preflight past the limit: %d %v", res.Status, res.Header)
	}
	res = h.do(req{method: "GET", path: "/v1/users/me", token: token, header: origin})
	if res.Status != http.StatusTooManyRequests || res.Header.Get("Access-Control-Allow-Origin") != appOrigin ||
		res.Header.Get("Retry-After") == "" || res.Header.Get("RateLimit-Remaining") != "0" || res.problem(t).Type != problem.TypeURI("rate-limited") {
		t.Fatalf("request past the limit: %d %v %s", res.Status, res.Header, res.Body)
	}
	// Another origin gets no CORS headers at all.
	other := newHarness(t, withCORS)
	res = other.do(req{method: "GET", path: "/health", header: map[string]string{"Origin": "http://evil.example"}})
	if res.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("another origin: %v", res.Header)
	}
}

// TestRateLimitHeaders: answers tell the client its budget, of whichever limit has
// the fewest requests left.
func TestRateLimitHeaders(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(o *httpapi.Options) {
		o.RateLimitPerIP = httpapi.RateLimit{PerSecond: 0.001, Burst: 50}
		o.RateLimitPerToken = httpapi.RateLimit{PerSecond: 0.001, Burst: 10}
	})
	res := h.do(req{method: "GET", path: "/health"})
	if res.Header.Get("RateLimit-Limit") != "50" || res.Header.Get("RateLimit-Remaining") != "49" || res.Header.Get("RateLimit-Reset") == "" {
		t.Fatalf("public route: %v", res.Header)
	}
	token, _ := h.signUp()
	res = h.do(req{method: "GET", path: "/v1/users/me", token: token})
	if res.Header.Get("RateLimit-Limit") != "10" || res.Header.Get("RateLimit-Remaining") != "9" {
		t.Fatalf("authenticated route: the token's bucket has fewer left: %v", res.Header)
	}
}

// TestUserConditionalRequests: users carry ETags like todos; If-Match refuses a stale
// write of the profile or of its deletion, If-None-Match answers 304 on both kinds of
// single resource, and every write answers a Consistency-Token.
func TestUserConditionalRequests(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	res := h.do(req{method: "POST", path: "/v1/users", body: map[string]string{"email": "etag@example.com", "display_name": "E"}})
	if res.Header.Get("ETag") != `"1"` || res.Header.Get("Consistency-Token") == "" {
		t.Fatalf("sign-up headers: %v", res.Header)
	}
	var up session
	res.json(t, &up)
	token := up.Token
	me := func(header map[string]string) response {
		return h.do(req{method: "GET", path: "/v1/users/me", token: token, header: header})
	}
	if res := me(nil); res.Status != http.StatusOK || res.Header.Get("ETag") != `"1"` {
		t.Fatalf("GET me: %d %v", res.Status, res.Header)
	}
	for _, tag := range []string{`"1"`, `W/"1"`, `"7", "1"`, `*`} {
		if res := me(map[string]string{"If-None-Match": tag}); res.Status != http.StatusNotModified || len(res.Body) != 0 || res.Header.Get("ETag") != `"1"` {
			t.Fatalf("If-None-Match %s: %d %q", tag, res.Status, res.Body)
		}
	}
	patch := func(ifMatch string) response {
		return h.do(req{method: "PATCH", path: "/v1/users/me", token: token, body: map[string]string{"display_name": "F"},
			header: map[string]string{"If-Match": ifMatch}})
	}
	res = patch(`"1"`)
	if res.Status != http.StatusOK || res.Header.Get("ETag") != `"2"` || res.Header.Get("Consistency-Token") == "" {
		t.Fatalf("PATCH If-Match 1: %d %v", res.Status, res.Header)
	}
	for _, stale := range []string{`"1"`, `W/"2"`} {
		if res := patch(stale); res.Status != http.StatusPreconditionFailed || res.problem(t).Type != problem.TypeURI("precondition-failed") {
			t.Fatalf("PATCH If-Match %s: %d %s", stale, res.Status, res.Body)
		}
	}
	if res := me(map[string]string{"If-None-Match": `"1"`}); res.Status != http.StatusOK {
		t.Fatalf("If-None-Match of the old version: %d", res.Status)
	}
	if res := h.do(req{method: "DELETE", path: "/v1/users/me", token: token, header: map[string]string{"If-Match": `"1"`}}); res.Status != http.StatusPreconditionFailed {
		t.Fatalf("DELETE If-Match 1: %d %s", res.Status, res.Body)
	}

	// A replayed create names a position at least as far as the first answer's.
	key := map[string]string{"Idempotency-Key": "create-1"}
	first := h.do(req{method: "POST", path: "/v1/todos", token: token, body: map[string]string{"title": "t"}, header: key})
	replay := h.do(req{method: "POST", path: "/v1/todos", token: token, body: map[string]string{"title": "t"}, header: key})
	a, errA := consistency.Parse(first.Header.Get("Consistency-Token"))
	b, errB := consistency.Parse(replay.Header.Get("Consistency-Token"))
	if errA != nil || errB != nil || replay.Header.Get("Idempotent-Replayed") != "true" || b.StatsVersion < a.StatsVersion || a.StatsVersion < 2 {
		t.Fatalf("create %v then replay %v", first.Header, replay.Header)
	}
	var td todo
	first.json(t, &td)
	get := func(tag string) response {
		return h.do(req{method: "GET", path: "/v1/todos/" + td.ID, token: token, header: map[string]string{"If-None-Match": tag}})
	}
	if res := get(`"1"`); res.Status != http.StatusNotModified {
		t.Fatalf("todo If-None-Match 1: %d", res.Status)
	}
	res = h.do(req{method: "PATCH", path: "/v1/todos/" + td.ID, token: token, body: map[string]bool{"completed": true}})
	if res.Header.Get("Consistency-Token") == "" {
		t.Fatalf("todo PATCH headers: %v", res.Header)
	}
	if res := get(`"1"`); res.Status != http.StatusOK || res.Header.Get("ETag") != `"2"` {
		t.Fatalf("todo If-None-Match of the old version: %d %v", res.Status, res.Header)
	}
	res = h.do(req{method: "DELETE", path: "/v1/todos/" + td.ID, token: token})
	if res.Status != http.StatusNoContent || res.Header.Get("Consistency-Token") == "" {
		t.Fatalf("todo DELETE: %d %v", res.Status, res.Header)
	}
	res = h.do(req{method: "DELETE", path: "/v1/users/me", token: token, header: map[string]string{"If-Match": `"2"`}})
	if res.Status != http.StatusNoContent || res.Header.Get("ETag") != `"3"` || res.Header.Get("Consistency-Token") == "" {
		t.Fatalf("DELETE If-Match 2: %d %v", res.Status, res.Header)
	}
}

// TestListUpdatedSince: a client syncing incrementally gets the todos updated at or
// after the time it asks for, paged like any list.
func TestListUpdatedSince(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	token, _ := h.signUp()
	var all []todo
	for range 3 {
		all = append(all, h.createTodo(token, map[string]string{"title": "t"}))
	}
	res := h.do(req{method: "PATCH", path: "/v1/todos/" + all[0].ID, token: token, body: map[string]string{"title": "changed"}})
	var changed todo
	res.json(t, &changed)
	var page struct {
		Items      []todo  `json:"items"`
		NextCursor *string `json:"next_cursor"`
	}
	res = h.do(req{method: "GET", path: "/v1/todos?updated_since=" + changed.UpdatedAt, token: token})
	res.json(t, &page)
	if res.Status != http.StatusOK || len(page.Items) != 1 || page.Items[0].ID != all[0].ID {
		t.Fatalf("updated_since the change: %d %s", res.Status, res.Body)
	}
	res = h.do(req{method: "GET", path: "/v1/todos?limit=2&updated_since=" + all[0].CreatedAt, token: token})
	res.json(t, &page)
	if len(page.Items) != 2 || page.NextCursor == nil {
		t.Fatalf("first page: %s", res.Body)
	}
	res = h.do(req{method: "GET", path: "/v1/todos?limit=2&updated_since=" + all[0].CreatedAt + "&cursor=" + *page.NextCursor, token: token})
	res.json(t, &page)
	if res.Status != http.StatusOK || len(page.Items) != 1 || page.Items[0].ID != all[2].ID {
		t.Fatalf("second page: %d %s", res.Status, res.Body)
	}
	res = h.do(req{method: "GET", path: "/v1/todos?updated_since=yesterday", token: token})
	if res.Status != http.StatusBadRequest || res.problem(t).Errors[0].Pointer != "query:updated_since" {
		t.Fatalf("invalid updated_since: %d %s", res.Status, res.Body)
	}
}
