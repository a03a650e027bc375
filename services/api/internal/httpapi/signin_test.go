package httpapi_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/outboxtodo/outboxtodo/services/api/internal/httpapi"
	"github.com/outboxtodo/outboxtodo/services/api/internal/password"
	"github.com/outboxtodo/outboxtodo/services/api/internal/problem"
	"github.com/outboxtodo/outboxtodo/services/api/internal/tokens"
)

type session struct {
	User      user    `json:"user"`
	Token     string  `json:"token"`
	TokenID   string  `json:"token_id"`
	ExpiresAt *string `json:"expires_at"`
}

// signUpWith signs up a new user with the password and returns the email.
func (h *harness) signUpWith(pw string) (string, session) {
	h.t.Helper()
	email := fmt.Sprintf("user%d@example.com", h.users.Add(1))
	res := h.do(req{method: "POST", path: "/v1/users", body: map[string]string{"email": email, "display_name": "U", "password": pw}})
	if res.Status != http.StatusCreated {
		h.t.Fatalf("sign-up: %d %s", res.Status, res.Body)
	}
	var s session
	res.json(h.t, &s)
	return email, s
}

func (h *harness) signIn(email, pw string) response {
	h.t.Helper()
	return h.do(req{method: "POST", path: "/v1/sessions", body: map[string]string{"email": email, "password": pw}})
}

// TestSignIn: a password set at sign-up or later signs the user in with a new token
// of their own; a wrong password, an unknown email and a user without a password get
// one and the same answer; the hash is argon2id with its parameters recorded.
func TestSignIn(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	email, up := h.signUpWith("correct horse battery")
	if up.Token == "" || up.TokenID == "" {
		t.Fatalf("sign-up with a password: %+v", up)
	}
	res := h.signIn(strings.ToUpper(email), "correct horse battery")
	if res.Status != http.StatusCreated {
		t.Fatalf("sign-in: %d %s", res.Status, res.Body)
	}
	var in session
	res.json(t, &in)
	if in.User.ID != up.User.ID || in.Token == "" || in.Token == up.Token || in.TokenID == up.TokenID {
		t.Fatalf("sign-in answered %+v after sign-up %+v", in, up)
	}
	if res := h.do(req{method: "GET", path: "/v1/users/me", token: in.Token}); res.Status != http.StatusOK {
		t.Fatalf("the sign-in's token: %d %s", res.Status, res.Body)
	}
	var hash string
	if err := h.pool.QueryRow(t.Context(), `SELECT hash FROM user_passwords WHERE user_id = $1`, up.User.ID).Scan(&hash); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(hash, "$argon2id$v=19$m=64,t=1,p=1$") || strings.Contains(hash, "correct") {
		t.Fatalf("stored hash %q", hash)
	}

	// One answer for every failure.
	_, noPassword := h.signUp()
	var first *problem.Details
	for _, c := range []struct{ name, email, pw string }{
		{"wrong password", email, "correct horse batterY"},
		{"unknown email", "nobody@example.com", "correct horse battery"},
		{"user without a password", noPassword.Email, "correct horse battery"},
	} {
		res := h.signIn(c.email, c.pw)
		p := res.problem(t)
		if res.Status != http.StatusUnauthorized || p.Type != problem.TypeURI("invalid-credentials") {
			t.Fatalf("%s: %d %s", c.name, res.Status, res.Body)
		}
		p.Instance, p.RequestID = "", ""
		if first == nil {
			first = &p
		} else if fmt.Sprint(p) != fmt.Sprint(*first) {
			t.Fatalf("%s answers %+v, another failure %+v", c.name, p, *first)
		}
	}
	if n := h.count(`SELECT count(*) FROM api_tokens WHERE user_id = $1`, up.User.ID); n != 2 {
		t.Fatalf("%d tokens after a sign-up and one sign-in, want 2", n)
	}

	// Invalid bodies are validation errors, never a hint about the account.
	res = h.do(req{method: "POST", path: "/v1/sessions", body: `{"email":"x@example.com"}`})
	if res.Status != http.StatusUnprocessableEntity {
		t.Fatalf("without a password: %d %s", res.Status, res.Body)
	}
	res = h.do(req{method: "POST", path: "/v1/sessions", body: `{"email":"x@example.com","password":"p","remember":true}`})
	if res.Status != http.StatusBadRequest || res.problem(t).Type != problem.TypeURI("unknown-field") {
		t.Fatalf("with an unknown field: %d %s", res.Status, res.Body)
	}
}

// TestSignUpReplayThenSignIn: the replay of a sign-up carries no token (only hashes
// are stored); the password is how the client gets one. The stored fingerprint of the
// request holds no trace of the password.
func TestSignUpReplayThenSignIn(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	body := map[string]string{"email": "replay@example.com", "display_name": "R", "password": "correct horse battery"}
	key := map[string]string{"Idempotency-Key": "signup-1"}
	first := h.do(req{method: "POST", path: "/v1/users", body: body, header: key})
	replay := h.do(req{method: "POST", path: "/v1/users", body: body, header: key})
	var a, b session
	first.json(t, &a)
	replay.json(t, &b)
	if first.Status != http.StatusCreated || replay.Status != http.StatusCreated || replay.Header.Get("Idempotent-Replayed") != "true" ||
		b.Token != "" || b.TokenID != a.TokenID || b.User.ID != a.User.ID {
		t.Fatalf("first %d %s\nreplay %d %s", first.Status, first.Body, replay.Status, replay.Body)
	}
	if replay.Header.Get("Consistency-Token") == "" || replay.Header.Get("ETag") != `"1"` {
		t.Fatalf("replay headers %v", replay.Header)
	}
	res := h.signIn("replay@example.com", "correct horse battery")
	if res.Status != http.StatusCreated {
		t.Fatalf("sign-in after a replay: %d %s", res.Status, res.Body)
	}
	// The same key and body with another password replays the first sign-up too.
	body["password"] = "another long password"
	if res := h.do(req{method: "POST", path: "/v1/users", body: body, header: key}); res.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("another password under the same key: %d %s", res.Status, res.Body)
	}
	if n := h.count(`SELECT count(*) FROM idempotency_keys WHERE position('correct' in convert_from(response_body, 'UTF8')) > 0`); n != 0 {
		t.Fatal("a stored response holds the password")
	}
}

// TestSignInAttemptsAreLimited: attempts count per email address and per client
// address, right or wrong, and the limit's 429 carries Retry-After.
func TestSignInAttemptsAreLimited(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(o *httpapi.Options) { o.SignInPerEmail, o.SignInPerAddress = 3, 5 })
	email, _ := h.signUpWith("correct horse battery")
	for i := range 2 {
		if res := h.signIn(email, "wrong password"); res.Status != http.StatusUnauthorized {
			t.Fatalf("attempt %d: %d %s", i+1, res.Status, res.Body)
		}
	}
	if res := h.signIn(email, "correct horse battery"); res.Status != http.StatusCreated {
		t.Fatalf("attempt 3: %d %s", res.Status, res.Body)
	}
	res := h.signIn(email, "correct horse battery")
	if res.Status != http.StatusTooManyRequests || res.problem(t).Type != problem.TypeURI("rate-limited") || res.Header.Get("Retry-After") == "" {
		t.Fatalf("attempt 4 on one email: %d %s %v", res.Status, res.Body, res.Header)
	}
	// Another email from the same address: the address has one attempt left.
	other, _ := h.signUpWith("another long password")
	if res := h.signIn(other, "another long password"); res.Status != http.StatusCreated {
		t.Fatalf("attempt 5 from the address: %d %s", res.Status, res.Body)
	}
	if res := h.signIn(other, "another long password"); res.Status != http.StatusTooManyRequests {
		t.Fatalf("attempt 6 from the address: %d %s", res.Status, res.Body)
	}
}

// TestSetPassword: a user without a password sets one with their token; changing it
// takes the current one, and wrong guesses of it count against the sign-in limit.
func TestSetPassword(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(o *httpapi.Options) { o.SignInPerEmail = 3 })
	signIns := h.replica() // with the default limit: the sign-ins below are not what is counted
	token, u := h.signUp()
	set := func(body any) response {
		return h.do(req{method: "PUT", path: "/v1/users/me/password", token: token, body: body})
	}
	if res := signIns.signIn(u.Email, "first password"); res.Status != http.StatusUnauthorized {
		t.Fatalf("sign-in before a password is set: %d %s", res.Status, res.Body)
	}
	if res := set(map[string]string{"password": "short"}); res.Status != http.StatusUnprocessableEntity || res.problem(t).Errors[0].Pointer != "/password" {
		t.Fatalf("a short password: %d %s", res.Status, res.Body)
	}
	if res := set(map[string]string{"password": "first password"}); res.Status != http.StatusNoContent {
		t.Fatalf("set: %d %s", res.Status, res.Body)
	}
	if res := signIns.signIn(u.Email, "first password"); res.Status != http.StatusCreated {
		t.Fatalf("sign-in with the set password: %d %s", res.Status, res.Body)
	}
	for _, body := range []map[string]string{
		{"password": "second password"},
		{"password": "second password", "current_password": "not the password"},
	} {
		res := set(body)
		if res.Status != http.StatusUnprocessableEntity || res.problem(t).Errors[0].Pointer != "/current_password" {
			t.Fatalf("change with %v: %d %s", body, res.Status, res.Body)
		}
	}
	if res := set(map[string]string{"password": "second password", "current_password": "first password"}); res.Status != http.StatusNoContent {
		t.Fatalf("change: %d %s", res.Status, res.Body)
	}
	if res := signIns.signIn(u.Email, "first password"); res.Status != http.StatusUnauthorized {
		t.Fatalf("sign-in with the old password: %d %s", res.Status, res.Body)
	}
	if res := signIns.signIn(u.Email, "second password"); res.Status != http.StatusCreated {
		t.Fatalf("sign-in with the new password: %d %s", res.Status, res.Body)
	}
	// Three changes of a set password were allowed; the fourth is refused.
	res := set(map[string]string{"password": "third password", "current_password": "second password"})
	if res.Status != http.StatusTooManyRequests {
		t.Fatalf("a fifth attempt at the current password: %d %s", res.Status, res.Body)
	}
}

// TestSignInRehashesWithRaisedParameters: a replica with raised argon2id parameters
// still signs in a user whose hash has the old ones, and stores a new hash.
func TestSignInRehashesWithRaisedParameters(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	email, up := h.signUpWith("correct horse battery")
	raised := h.replica(func(o *httpapi.Options) { o.PasswordHash = password.Params{Memory: 128, Time: 2, Threads: 1} })
	if res := raised.signIn(email, "correct horse battery"); res.Status != http.StatusCreated {
		t.Fatalf("sign-in on the raised replica: %d %s", res.Status, res.Body)
	}
	if n := h.count(`SELECT count(*) FROM user_passwords WHERE user_id = $1 AND hash LIKE '$argon2id$v=19$m=128,t=2,p=1$%'`, up.User.ID); n != 1 {
		t.Fatal("the hash was not remade with the raised parameters")
	}
	if res := h.signIn(email, "correct horse battery"); res.Status != http.StatusCreated {
		t.Fatalf("sign-in on the old replica with the new hash: %d %s", res.Status, res.Body)
	}
}

// TestSignInAtTheTokenLimit: a user holding the most tokens a user may still signs in;
// their oldest token goes.
func TestSignInAtTheTokenLimit(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	email, up := h.signUpWith("correct horse battery")
	for range tokens.MaxPerUser - 1 {
		if status, _ := h.issueToken(up.Token, req{}); status != http.StatusCreated {
			t.Fatalf("issue: %d", status)
		}
	}
	res := h.signIn(email, "correct horse battery")
	if res.Status != http.StatusCreated {
		t.Fatalf("sign-in at the limit: %d %s", res.Status, res.Body)
	}
	if n := h.count(`SELECT count(*) FROM api_tokens WHERE user_id = $1`, up.User.ID); n != tokens.MaxPerUser {
		t.Fatalf("%d tokens, want %d", n, tokens.MaxPerUser)
	}
	if res := h.do(req{method: "GET", path: "/v1/users/me", token: up.Token}); res.Status != http.StatusUnauthorized {
		t.Fatalf("the oldest token after the sign-in: %d", res.Status)
	}
}
