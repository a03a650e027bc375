package httpapi_test

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outboxtodo/outboxtodo/services/api/internal/httpapi"
	"github.com/outboxtodo/outboxtodo/services/api/internal/problem"
	"github.com/outboxtodo/outboxtodo/services/api/internal/tokens"
)

type tokenInfo struct {
	ID         string  `json:"id"`
	Token      *string `json:"token"`
	CreatedAt  string  `json:"created_at"`
	ExpiresAt  *string `json:"expires_at"`
	LastUsedAt *string `json:"last_used_at"`
	Current    bool    `json:"current"`
}

func (h *harness) listTokens(token string) []tokenInfo {
	h.t.Helper()
	res := h.do(req{method: "GET", path: "/v1/users/me/tokens", token: token})
	if res.Status != http.StatusOK {
		h.t.Fatalf("list tokens: %d %s", res.Status, res.Body)
	}
	var out struct{ Items []tokenInfo }
	res.json(h.t, &out)
	return out.Items
}

func (h *harness) issueToken(token string, r req) (int, tokenInfo) {
	h.t.Helper()
	r.method, r.path, r.token = "POST", "/v1/users/me/tokens", token
	res := h.do(r)
	var out tokenInfo
	if res.Status == http.StatusCreated {
		res.json(h.t, &out)
	}
	return res.Status, out
}

// TestTokensAUserCanManage: a user lists their tokens (ids and times, never secrets)
// and revokes any of them by id; a replayed issuance names the token it issued, so a
// client whose answer was lost can revoke it; tokens whose secrets were lost cannot
// lock the user out of issuing, and expired ones do not count.
func TestTokensAUserCanManage(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	first, u := h.signUp()
	list := h.listTokens(first)
	if len(list) != 1 || !list[0].Current || list[0].ExpiresAt != nil || list[0].Token != nil || list[0].LastUsedAt == nil {
		t.Fatalf("after sign-up: %+v", list)
	}
	// Last use at hour precision.
	if used, err := time.Parse(time.RFC3339, *list[0].LastUsedAt); err != nil || !used.Equal(used.Truncate(time.Hour)) || time.Since(used) > 2*time.Hour {
		t.Fatalf("last_used_at %s: want the start of this hour", *list[0].LastUsedAt)
	}

	// The answer to an issue is lost; its replay names the token, which the client
	// then revokes.
	key := map[string]string{"Idempotency-Key": "issue-1"}
	status, issued := h.issueToken(first, req{header: key})
	if status != http.StatusCreated || issued.Token == nil || issued.ID == "" {
		t.Fatalf("issue: %d %+v", status, issued)
	}
	status, replayed := h.issueToken(first, req{header: key})
	if status != http.StatusCreated || replayed.Token != nil || replayed.ID != issued.ID || replayed.CreatedAt != issued.CreatedAt {
		t.Fatalf("replay: %d %+v, want the id %s without the token", status, replayed, issued.ID)
	}
	if res := h.do(req{method: "GET", path: "/v1/users/me", token: *issued.Token}); res.Status != http.StatusOK {
		t.Fatalf("issued token: %d", res.Status)
	}
	if res := h.do(req{method: "DELETE", path: "/v1/users/me/tokens/" + replayed.ID, token: first}); res.Status != http.StatusNoContent {
		t.Fatalf("revoke by id: %d %s", res.Status, res.Body)
	}
	if res := h.do(req{method: "GET", path: "/v1/users/me", token: *issued.Token}); res.Status != http.StatusUnauthorized {
		t.Fatalf("revoked token: %d", res.Status)
	}
	if res := h.do(req{method: "DELETE", path: "/v1/users/me/tokens/" + replayed.ID, token: first}); res.Status != http.StatusNotFound ||
		res.problem(t).Type != problem.TypeURI("not-found") {
		t.Fatalf("revoke again: %d %s", res.Status, res.Body)
	}
	// Another user's token is not found, and stays live.
	other, _ := h.signUp()
	theirs := h.listTokens(other)[0].ID
	if res := h.do(req{method: "DELETE", path: "/v1/users/me/tokens/" + theirs, token: first}); res.Status != http.StatusNotFound {
		t.Fatalf("revoke another user's token: %d %s", res.Status, res.Body)
	}
	if res := h.do(req{method: "GET", path: "/v1/users/me", token: other}); res.Status != http.StatusOK {
		t.Fatalf("the other user's token after a foreign revoke: %d", res.Status)
	}

	// Orphans: every other token's secret is lost. At the limit the user is told how
	// to make room, lists, revokes one by id and issues again.
	for range tokens.MaxPerUser - 1 {
		if status, _ := h.issueToken(first, req{}); status != http.StatusCreated {
			t.Fatalf("issue below the limit: %d", status)
		}
	}
	res := h.do(req{method: "POST", path: "/v1/users/me/tokens", token: first})
	if res.Status != http.StatusConflict || res.problem(t).Type != problem.TypeURI("too-many-tokens") {
		t.Fatalf("issue at the limit: %d %s", res.Status, res.Body)
	}
	list = h.listTokens(first)
	if len(list) != tokens.MaxPerUser {
		t.Fatalf("%d tokens listed, want %d", len(list), tokens.MaxPerUser)
	}
	var orphan string
	for _, tk := range list {
		if tk.Token != nil {
			t.Fatalf("a listed token shows its secret: %+v", tk)
		}
		if !tk.Current {
			orphan = tk.ID
		}
	}
	if res := h.do(req{method: "DELETE", path: "/v1/users/me/tokens/" + orphan, token: first}); res.Status != http.StatusNoContent {
		t.Fatalf("revoke an orphan: %d %s", res.Status, res.Body)
	}
	if status, _ := h.issueToken(first, req{}); status != http.StatusCreated {
		t.Fatalf("issue after revoking an orphan: %d", status)
	}

	// Expired tokens stop working, leave the list and free their place.
	h.exec(`UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE user_id = $1 AND token_hash <> sha256($2::bytea)`, u.ID, []byte(first))
	if list := h.listTokens(first); len(list) != 1 || !list[0].Current {
		t.Fatalf("after the others expired: %+v", list)
	}
	status, soon := h.issueToken(first, req{body: map[string]string{"expires_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}})
	if status != http.StatusCreated || soon.ExpiresAt == nil {
		t.Fatalf("issue with an expiry: %d %+v", status, soon)
	}
	if n := h.count(`SELECT count(*) FROM api_tokens WHERE user_id = $1`, u.ID); n != 2 {
		t.Fatalf("%d token rows, want the expired ones deleted by the issue", n)
	}
	h.exec(`UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE id = $1`, soon.ID)
	if res := h.do(req{method: "GET", path: "/v1/users/me", token: *soon.Token}); res.Status != http.StatusUnauthorized {
		t.Fatalf("expired token: %d", res.Status)
	}
	for _, body := range []string{`{"expires_at":"2001-01-01T00:00:00Z"}`, `{"expires_at":"soon"}`, `{"expires_at":null}`} {
		res := h.do(req{method: "POST", path: "/v1/users/me/tokens", token: first, body: body})
		if res.Status != http.StatusUnprocessableEntity || res.problem(t).Type != problem.TypeURI("validation-failed") {
			t.Fatalf("issue with %s: %d %s", body, res.Status, res.Body)
		}
	}
}

// TestTokenTTL: with a token lifetime, every new token expires after it, and a request
// may shorten it but not extend it.
func TestTokenTTL(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(o *httpapi.Options) { o.TokenTTL = time.Hour })
	first, _ := h.signUp()
	list := h.listTokens(first)
	created, _ := time.Parse(time.RFC3339Nano, list[0].CreatedAt)
	if list[0].ExpiresAt == nil {
		t.Fatal("sign-up token without expiry")
	}
	if expires, _ := time.Parse(time.RFC3339Nano, *list[0].ExpiresAt); !expires.Equal(created.Add(time.Hour)) {
		t.Fatalf("sign-up token expires at %s, created at %s", expires, created)
	}
	if status, tk := h.issueToken(first, req{}); status != http.StatusCreated || tk.ExpiresAt == nil {
		t.Fatalf("issue: %d %+v", status, tk)
	}
	res := h.do(req{method: "POST", path: "/v1/users/me/tokens", token: first,
		body: map[string]string{"expires_at": time.Now().Add(2 * time.Hour).UTC().Format(time.RFC3339)}})
	if res.Status != http.StatusUnprocessableEntity {
		t.Fatalf("issue past the lifetime: %d %s", res.Status, res.Body)
	}
	if status, _ := h.issueToken(first, req{body: map[string]string{"expires_at": time.Now().Add(time.Minute).UTC().Format(time.RFC3339)}}); status != http.StatusCreated {
		t.Fatalf("issue within the lifetime: %d", status)
	}
}

// countingStore counts the store calls authentication makes: it is the real store.
type countingStore struct {
	httpapi.Store
	lookups, uses atomic.Int64
}

func (s *countingStore) TokenByHash(ctx context.Context, hash []byte) (tokens.Token, error) {
	s.lookups.Add(1)
	return s.Store.TokenByHash(ctx, hash)
}

func (s *countingStore) RecordTokenUse(ctx context.Context, id uuid.UUID, period time.Time) error {
	s.uses.Add(1)
	return s.Store.RecordTokenUse(ctx, id, period)
}

func counting(cs **countingStore) harnessOpt {
	return func(o *httpapi.Options) {
		*cs = &countingStore{Store: o.Store}
		o.Store = *cs
	}
}

// TestAuthenticationSparesTheDatabase: within AUTH_CACHE_TTL a token is looked up once
// however many requests carry it, and its last use is written once per hour, not once
// per request.
func TestAuthenticationSparesTheDatabase(t *testing.T) {
	t.Parallel()
	var cs *countingStore
	h := newHarness(t, counting(&cs), func(o *httpapi.Options) { o.AuthCacheTTL = time.Hour })
	token, _ := h.signUp()
	const n = 20
	for range n {
		if res := h.do(req{method: "GET", path: "/v1/users/me", token: token}); res.Status != http.StatusOK {
			t.Fatalf("get me: %d", res.Status)
		}
	}
	if l, u := cs.lookups.Load(), cs.uses.Load(); l != 1 || u != 1 {
		t.Fatalf("%d requests made %d lookups and %d last-use writes, want 1 and 1", n, l, u)
	}

	// Without the cache every request looks the token up, but last use is still
	// written once per hour.
	h2 := newHarness(t, counting(&cs))
	token, _ = h2.signUp()
	for range n {
		h2.do(req{method: "GET", path: "/v1/users/me", token: token})
	}
	if l, u := cs.lookups.Load(), cs.uses.Load(); l != n || u != 1 {
		t.Fatalf("without the cache: %d lookups and %d last-use writes, want %d and 1", l, u, n)
	}
}

// TestRevocationReachesEveryReplica: two API replicas on one database, each caching
// tokens for the TTL. A token revoked through one is refused by it at once and by the
// other within the TTL.
func TestRevocationReachesEveryReplica(t *testing.T) {
	t.Parallel()
	const ttl = time.Second
	withCache := func(o *httpapi.Options) { o.AuthCacheTTL = ttl }
	a := newHarness(t, withCache)
	b := a.replica(withCache)
	token, _ := a.signUp()
	for _, h := range []*harness{a, b} { // both replicas cache the token
		if res := h.do(req{method: "GET", path: "/v1/users/me", token: token}); res.Status != http.StatusOK {
			t.Fatalf("before the revoke: %d", res.Status)
		}
	}
	if res := a.do(req{method: "DELETE", path: "/v1/users/me/tokens/current", token: token}); res.Status != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", res.Status, res.Body)
	}
	revoked := time.Now()
	if res := a.do(req{method: "GET", path: "/v1/users/me", token: token}); res.Status != http.StatusUnauthorized {
		t.Fatalf("the revoking replica still admits the token: %d", res.Status)
	}
	// The bound is the TTL; the deadline leaves room for a slow machine.
	for deadline := revoked.Add(ttl + 10*time.Second); ; {
		res := b.do(req{method: "GET", path: "/v1/users/me", token: token})
		if res.Status == http.StatusUnauthorized {
			break
		}
		if res.Status != http.StatusOK || time.Now().After(deadline) {
			t.Fatalf("the other replica %s after the revoke: %d %s", time.Since(revoked), res.Status, res.Body)
		}
	}
}
