// Package auth recognises bearer tokens without a database round trip per request: a
// bounded in-process cache maps a token's hash to the token for at most TTL, so a
// revocation made on any replica takes effect on every replica within TTL, and at once
// on the replica that revoked (it forgets the token). Expiry is judged on every
// request, cached or not. The token's last use is recorded at
// tokens.LastUsedPrecision, so authentication writes at most once per token and
// period (per replica, at worst), never once per request.
//
// Only live tokens are cached: unknown tokens are looked up every time (the
// per-address rate limit bounds them), so a new token works at once and garbage
// cannot evict real entries.
package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/outboxtodo/outboxtodo/services/api/internal/flight"
	"github.com/outboxtodo/outboxtodo/services/api/internal/tokens"
)

// Store is what authentication needs from storage.
type Store interface {
	// TokenByHash returns the token with that hash, expired or not, or
	// tokens.ErrNotFound.
	TokenByHash(ctx context.Context, hash []byte) (tokens.Token, error)
	// RecordTokenUse moves the token's last use to period, unless it is there already.
	RecordTokenUse(ctx context.Context, id uuid.UUID, period time.Time) error
}

// Config tunes a Tokens.
type Config struct {
	// TTL is how long a looked-up token is trusted without asking the store again:
	// the bound on how late another replica's revocation takes effect here. 0 asks
	// the store on every request.
	TTL time.Duration
	// Size bounds the cached tokens; the least recently used is dropped past it.
	// 0 means DefaultSize.
	Size int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	Log *slog.Logger
}

// DefaultSize is the cache size when Config.Size is 0: about 300 bytes an entry.
const DefaultSize = 100_000

// lookupTimeout bounds one store lookup, which runs on behalf of every request of the
// same token waiting for it, so that one request's cancellation cannot fail the others.
const lookupTimeout = 5 * time.Second

// Tokens authenticates bearer tokens. It is safe for concurrent use.
type Tokens struct {
	store Store
	ttl   time.Duration
	now   func() time.Time
	log   *slog.Logger
	cache *lru.Cache[string, entry] // nil when ttl is 0
	group flight.Group[tokens.Token]
	// forgets counts Forget calls: a lookup that overlapped one does not cache its
	// result, which may predate the revocation.
	forgets atomic.Uint64
}

type entry struct {
	token  tokens.Token
	readAt time.Time // when the read that found it started
}

// New returns a Tokens on store.
func New(store Store, c Config) (*Tokens, error) {
	if c.TTL < 0 || c.Size < 0 {
		return nil, fmt.Errorf("token cache TTL %s size %d: want neither negative", c.TTL, c.Size)
	}
	if c.Size == 0 {
		c.Size = DefaultSize
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	a := &Tokens{store: store, ttl: c.TTL, now: c.Now, log: c.Log}
	if c.TTL > 0 {
		cache, err := lru.New[string, entry](c.Size)
		if err != nil {
			return nil, fmt.Errorf("token cache: %w", err)
		}
		a.cache = cache
	}
	return a, nil
}

// Authenticate returns the live token whose hash is hash, or an error wrapping
// tokens.ErrNotFound when it is unknown, revoked or expired. Any other error means the
// store could not answer.
func (a *Tokens) Authenticate(ctx context.Context, hash []byte) (tokens.Token, error) {
	t, err := a.lookup(ctx, hash)
	if err != nil {
		return tokens.Token{}, err
	}
	now := a.now()
	if t.Expired(now) {
		return tokens.Token{}, fmt.Errorf("%w: expired at %s", tokens.ErrNotFound, t.ExpiresAt.Format(time.RFC3339))
	}
	if t.NeedsUseRecorded(now) {
		a.recordUse(ctx, t, now)
	}
	return t, nil
}

// Forget drops the token with hash from the cache, so that a revocation made through
// this replica takes effect here at once.
func (a *Tokens) Forget(hash []byte) {
	if a.cache == nil {
		return
	}
	a.forgets.Add(1)
	a.cache.Remove(string(hash))
}

func (a *Tokens) lookup(ctx context.Context, hash []byte) (tokens.Token, error) {
	if a.cache == nil {
		return a.store.TokenByHash(ctx, hash)
	}
	key := string(hash)
	if e, ok := a.cache.Get(key); ok && a.now().Sub(e.readAt) < a.ttl {
		return e.token, nil
	}
	return a.group.Do(ctx, key, lookupTimeout, func(lctx context.Context) (tokens.Token, error) {
		forgets, readAt := a.forgets.Load(), a.now()
		t, err := a.store.TokenByHash(lctx, hash)
		switch {
		case errors.Is(err, tokens.ErrNotFound):
			a.cache.Remove(key)
			return tokens.Token{}, err
		case err != nil:
			return tokens.Token{}, err
		}
		if a.forgets.Load() == forgets {
			a.cache.Add(key, entry{token: t, readAt: readAt})
		}
		return t, nil
	})
}

// recordUse moves the token's last use to the period of now. The cached copy moves
// first, so that the requests that follow on this replica do not write too. A failure
// is logged, not returned: the request is authenticated all the same.
func (a *Tokens) recordUse(ctx context.Context, t tokens.Token, now time.Time) {
	period := tokens.UsePeriod(now)
	if a.cache != nil {
		key := string(t.Hash)
		if e, ok := a.cache.Peek(key); ok && e.token.ID == t.ID {
			e.token.LastUsedAt = &period
			a.cache.Add(key, e)
		}
	}
	if err := a.store.RecordTokenUse(ctx, t.ID, period); err != nil {
		a.log.WarnContext(ctx, "record token use", "token_id", t.ID.String(), "error", err)
	}
}
