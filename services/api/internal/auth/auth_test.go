package auth_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outboxtodo/outboxtodo/services/api/internal/apitest"
	"github.com/outboxtodo/outboxtodo/services/api/internal/auth"
	"github.com/outboxtodo/outboxtodo/services/api/internal/tokens"
)

// memStore is the pure-logic stand-in for the token table: the cache's rules are
// tested here with a clock moved by hand; the real store is exercised through the
// HTTP tests (TestAuthenticationSparesTheDatabase, TestRevocationReachesEveryReplica).
type memStore struct {
	mu      sync.Mutex
	tokens  map[string]tokens.Token
	lookups int
	uses    int
	// during runs inside a lookup, after the row was read.
	during func()
}

func (s *memStore) TokenByHash(_ context.Context, hash []byte) (tokens.Token, error) {
	s.mu.Lock()
	s.lookups++
	t, ok := s.tokens[string(hash)]
	during := s.during
	s.mu.Unlock()
	if during != nil {
		during()
	}
	if !ok {
		return tokens.Token{}, tokens.ErrNotFound
	}
	return t, nil
}

func (s *memStore) RecordTokenUse(_ context.Context, id uuid.UUID, period time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.uses++
	for h, t := range s.tokens {
		if t.ID == id && (t.LastUsedAt == nil || t.LastUsedAt.Before(period)) {
			t.LastUsedAt = &period
			s.tokens[h] = t
		}
	}
	return nil
}

func (s *memStore) revoke(hash []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.tokens, string(hash))
}

func (s *memStore) counts() (lookups, uses int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lookups, s.uses
}

func setup(t *testing.T, ttl time.Duration, size int) (*auth.Tokens, *memStore, *apitest.Clock, []byte) {
	t.Helper()
	clk := apitest.NewClock(time.Date(2030, 1, 2, 10, 30, 0, 0, time.UTC))
	_, hash := tokens.New()
	st := &memStore{tokens: map[string]tokens.Token{
		string(hash): {ID: uuid.New(), UserID: uuid.New(), Hash: hash, CreatedAt: clk.Now()},
	}}
	a, err := auth.New(st, auth.Config{TTL: ttl, Size: size, Now: clk.Now, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return a, st, clk, hash
}

// authenticates fails t unless a accepts hash; when says at which step.
func authenticates(t *testing.T, a *auth.Tokens, hash []byte, when string) {
	t.Helper()
	if _, err := a.Authenticate(context.Background(), hash); err != nil {
		t.Fatalf("%s: %v", when, err)
	}
}

// refuses fails t unless a answers tokens.ErrNotFound for hash; when says at which
// step.
func refuses(t *testing.T, a *auth.Tokens, hash []byte, when string) {
	t.Helper()
	if _, err := a.Authenticate(context.Background(), hash); !errors.Is(err, tokens.ErrNotFound) {
		t.Fatalf("%s: %v, want ErrNotFound", when, err)
	}
}

func TestCacheServesWithinTheTTLOnly(t *testing.T) {
	t.Parallel()
	a, st, clk, hash := setup(t, time.Second, 0)
	for range 10 {
		authenticates(t, a, hash, "authenticate")
	}
	if l, u := st.counts(); l != 1 || u != 1 {
		t.Fatalf("10 authentications: %d lookups, %d use writes; want 1 and 1", l, u)
	}
	// Revoked elsewhere: still trusted until the TTL has passed, refused after.
	st.revoke(hash)
	clk.Advance(999 * time.Millisecond)
	authenticates(t, a, hash, "within the TTL")
	clk.Advance(time.Millisecond)
	refuses(t, a, hash, "after the TTL")
}

func TestForgetTakesEffectAtOnce(t *testing.T) {
	t.Parallel()
	a, st, _, hash := setup(t, time.Hour, 0)
	authenticates(t, a, hash, "authenticate")
	st.revoke(hash)
	a.Forget(hash)
	refuses(t, a, hash, "after Forget")
}

// A lookup that read the row before a revocation on this replica must not cache it
// after the Forget that followed.
func TestForgetDuringALookupWins(t *testing.T) {
	t.Parallel()
	a, st, _, hash := setup(t, time.Hour, 0)
	st.during = func() {
		st.mu.Lock()
		st.during = nil
		st.mu.Unlock()
		st.revoke(hash)
		a.Forget(hash)
	}
	authenticates(t, a, hash, "the lookup read a live token")
	refuses(t, a, hash, "the lookup overlapping a Forget was cached")
}

func TestExpiryIsJudgedOnEveryRequest(t *testing.T) {
	t.Parallel()
	a, st, clk, hash := setup(t, time.Hour, 0)
	expires := clk.Now().Add(time.Minute)
	st.mu.Lock()
	tk := st.tokens[string(hash)]
	tk.ExpiresAt = &expires
	st.tokens[string(hash)] = tk
	st.mu.Unlock()
	authenticates(t, a, hash, "authenticate")
	clk.Advance(time.Minute)
	refuses(t, a, hash, "a cached token past its expiry")
}

func TestLastUseIsWrittenOncePerHour(t *testing.T) {
	t.Parallel()
	for _, ttl := range []time.Duration{0, time.Second} {
		a, st, clk, hash := setup(t, ttl, 0)
		for range 5 { // 10:30 to 10:50
			authenticates(t, a, hash, "authenticate")
			clk.Advance(5 * time.Minute)
		}
		if _, u := st.counts(); u != 1 {
			t.Fatalf("ttl %s: %d use writes within one hour, want 1", ttl, u)
		}
		clk.Advance(10 * time.Minute) // 11:05
		authenticates(t, a, hash, "authenticate")
		if _, u := st.counts(); u != 2 {
			t.Fatalf("ttl %s: %d use writes after the hour turned, want 2", ttl, u)
		}
	}
}

func TestUnknownTokensAreNotCachedAndTheCacheIsBounded(t *testing.T) {
	t.Parallel()
	a, st, _, hash := setup(t, time.Hour, 1)
	_, unknown := tokens.New()
	for range 3 {
		refuses(t, a, unknown, "unknown token")
	}
	if l, _ := st.counts(); l != 3 {
		t.Fatalf("3 unknown authentications: %d lookups, want 3 (no negative caching)", l)
	}
	// A second live token evicts the first from a cache of one.
	_, other := tokens.New()
	st.mu.Lock()
	st.tokens[string(other)] = tokens.Token{ID: uuid.New(), UserID: uuid.New(), Hash: other}
	st.mu.Unlock()
	for _, h := range [][]byte{hash, other, hash} {
		authenticates(t, a, h, "authenticate")
	}
	if l, _ := st.counts(); l != 6 {
		t.Fatalf("%d lookups, want 6: the size bound evicts", l)
	}
}
