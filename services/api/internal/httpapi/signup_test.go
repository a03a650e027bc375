package httpapi_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/outboxtodo/outboxtodo/services/api/internal/problem"
)

// TestSignUpIdempotencyScope: sign-up keys are scoped by the request body, so two
// clients that pick the same key for different sign-ups both get their user; the same
// key and body replay; and a replay whose user was deleted since answers 410
// user-deleted instead of a user that no longer exists.
func TestSignUpIdempotencyScope(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	key := map[string]string{"Idempotency-Key": "my-first-sign-up"}
	ada := `{"email":"ada@example.com","display_name":"Ada"}`
	bob := `{"email":"bob@example.com","display_name":"Bob"}`
	a := h.do(req{method: "POST", path: "/v1/users", body: ada, header: key})
	b := h.do(req{method: "POST", path: "/v1/users", body: bob, header: key})
	var ra, rb struct {
		User  user   `json:"user"`
		Token string `json:"token"`
	}
	if a.Status != http.StatusCreated || b.Status != http.StatusCreated {
		t.Fatalf("two clients, one key:\n%d %s\n%d %s", a.Status, a.Body, b.Status, b.Body)
	}
	a.json(t, &ra)
	b.json(t, &rb)
	if ra.User.Email != "ada@example.com" || rb.User.Email != "bob@example.com" || rb.Token == "" || b.Header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("two clients, one key: %+v %+v", ra, rb)
	}

	again := h.do(req{method: "POST", path: "/v1/users", body: ada, header: key})
	if again.Status != http.StatusCreated || again.Header.Get("Idempotent-Replayed") != "true" || !jsonEqual(t, mustField(t, again.Body, "user"), mustField(t, a.Body, "user")) {
		t.Fatalf("replay: %d %v %s", again.Status, again.Header, again.Body)
	}

	if res := h.do(req{method: "DELETE", path: "/v1/users/me", token: ra.Token}); res.Status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", res.Status, res.Body)
	}
	gone := h.do(req{method: "POST", path: "/v1/users", body: ada, header: key})
	if p := gone.problem(t); gone.Status != http.StatusGone || p.Type != problem.TypeURI("user-deleted") {
		t.Fatalf("replay after the user was deleted: %d %s", gone.Status, gone.Body)
	}
	if n := h.count(`SELECT count(*) FROM users WHERE email = 'ada@example.com'`); n != 0 {
		t.Fatalf("the replay created %d users", n)
	}
	// A new key signs up again.
	if res := h.do(req{method: "POST", path: "/v1/users", body: ada, header: map[string]string{"Idempotency-Key": "second"}}); res.Status != http.StatusCreated {
		t.Fatalf("sign-up with a new key: %d %s", res.Status, res.Body)
	}
}

// mustField returns the raw member name of a JSON object.
func mustField(t *testing.T, body []byte, name string) []byte {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil || m[name] == nil {
		t.Fatalf("no %s in %s (%v)", name, body, err)
	}
	return m[name]
}
