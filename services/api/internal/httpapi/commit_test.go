package httpapi_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/outboxtodo/outboxtodo/services/api/internal/apitest"
	"github.com/outboxtodo/outboxtodo/services/api/internal/httpapi"
	"github.com/outboxtodo/outboxtodo/services/api/internal/postgres"
	"github.com/outboxtodo/outboxtodo/services/api/internal/problem"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

// TestDatabaseFaultsAnswerHonestly: a database that cannot be reached is a 503 with
// Retry-After; a write whose commit answer was lost answers its real outcome when the
// API can find it out, and 504 outcome-unknown when it cannot, and a retry with the
// same Idempotency-Key then replays instead of writing twice.
func TestDatabaseFaultsAnswerHonestly(t *testing.T) {
	t.Parallel()
	pool, direct, proxy := apitest.ProxiedPool(t)
	h := newHarness(t, func(o *httpapi.Options) { o.Store = postgres.New(pool, true) })
	token, me := h.signUp()
	todos := func() int {
		var n int
		if err := direct.QueryRow(context.Background(), `SELECT count(*) FROM todos WHERE user_id = $1`, me.ID).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	create := func(key string) response {
		return h.do(req{method: "POST", path: "/v1/todos", token: token, body: map[string]string{"title": "t"},
			header: map[string]string{"Idempotency-Key": key}})
	}
	wantProblem := func(res response, status int, slug string) {
		t.Helper()
		if p := res.problem(t); res.Status != status || p.Type != problem.TypeURI(slug) || res.Header.Get("Retry-After") == "" {
			t.Fatalf("answered %d %s (Retry-After %q), want %d %s", res.Status, res.Body, res.Header.Get("Retry-After"), status, slug)
		}
	}

	// The answer to a commit that landed is lost: the API finds the write and says so.
	proxy.FailNextCommit(sharedtest.AnswerLost)
	if res := create("landed"); res.Status != http.StatusCreated {
		t.Fatalf("a write that committed answered %d %s", res.Status, res.Body)
	}
	if n := todos(); n != 1 {
		t.Fatalf("%d todos, want 1", n)
	}

	// The commit never reached the server: nothing was written, retry later.
	proxy.FailNextCommit(sharedtest.CommitLost)
	wantProblem(create("lost"), http.StatusServiceUnavailable, "database-unavailable")
	if n := todos(); n != 1 {
		t.Fatalf("%d todos after a commit that never arrived, want 1", n)
	}

	// The answer is lost and the database stays unreachable: outcome unknown.
	proxy.Refuse(true)
	proxy.FailNextCommit(sharedtest.AnswerLost)
	wantProblem(create("unknown"), http.StatusGatewayTimeout, "outcome-unknown")
	// While it is down, even authentication answers 503, never 500.
	pool.Reset()
	wantProblem(h.do(req{method: "GET", path: "/v1/users/me", token: token}), http.StatusServiceUnavailable, "database-unavailable")

	// Back up: the retry with the same key replays the write that did land, once.
	proxy.Refuse(false)
	res := create("unknown")
	if res.Status != http.StatusCreated || res.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry after outcome-unknown answered %d (replayed %q) %s", res.Status, res.Header.Get("Idempotent-Replayed"), res.Body)
	}
	if n := todos(); n != 2 {
		t.Fatalf("%d todos, want 2: the unknown write landed once", n)
	}
}
