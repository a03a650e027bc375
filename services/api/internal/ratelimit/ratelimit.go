// Package ratelimit keeps one token bucket (golang.org/x/time/rate) per key, such as
// a client address or a bearer token, in a map whose size is bounded.
//
// Memory stays bounded two ways. A bucket that has been idle for burst/rate seconds
// is full again, and a full bucket behaves exactly like a new one, so such entries are
// dropped without changing any answer. If more than MaxKeys keys are active within
// that time anyway (a flood of distinct addresses), the least recently used bucket is
// evicted: its key starts again with a full burst, which is the price of a bounded
// map; the eviction counter makes it visible.
//
// The bookkeeping happens inside Take, in O(1) per call: no background goroutine.
package ratelimit

import (
	"container/list"
	"fmt"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Config of a Keyed limiter.
type Config struct {
	// PerSecond is the sustained rate of each key; it must be positive.
	PerSecond float64
	// Burst is how many requests a key may make at once; at least 1.
	Burst int
	// MaxKeys bounds the number of buckets kept; at least 1.
	MaxKeys int
	// Now is the clock; nil means time.Now. Tests move it by hand.
	Now func() time.Time
}

// Keyed is a set of token buckets, one per key. It is safe for concurrent use.
type Keyed struct {
	limit   rate.Limit
	burst   int
	maxKeys int
	idle    time.Duration
	now     func() time.Time

	mu      sync.Mutex
	entries map[string]*list.Element // of *entry
	lru     *list.List               // front: most recently used
	evicted uint64
}

type entry struct {
	key  string
	lim  *rate.Limiter
	seen time.Time
}

// New returns a Keyed limiter, or an error when c is out of range.
func New(c Config) (*Keyed, error) {
	if !(c.PerSecond > 0) || math.IsInf(c.PerSecond, 0) || c.Burst < 1 || c.MaxKeys < 1 {
		return nil, fmt.Errorf("rate limit %v/s burst %d max keys %d: want a positive finite rate, burst and key count",
			c.PerSecond, c.Burst, c.MaxKeys)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return &Keyed{
		limit:   rate.Limit(c.PerSecond),
		burst:   c.Burst,
		maxKeys: c.MaxKeys,
		idle:    time.Duration(float64(c.Burst) / c.PerSecond * float64(time.Second)),
		now:     c.Now,
		entries: make(map[string]*list.Element),
		lru:     list.New(),
	}, nil
}

// Decision is the outcome of Take, with what a client may be told of its budget.
type Decision struct {
	Allowed bool
	// RetryAfter is the time until a token is available; zero when Allowed.
	RetryAfter time.Duration
	// Limit is the bucket's size (the burst); Remaining the whole tokens left in it after
	// this request; Reset the time until it is full again.
	Limit     int
	Remaining int
	Reset     time.Duration
}

// Take takes one token from key's bucket and reports the budget left. When the bucket
// is empty it takes nothing, and the decision is a refusal with the time until a
// token will be available.
func (k *Keyed) Take(key string) Decision {
	now := k.now()
	k.mu.Lock()
	defer k.mu.Unlock()
	k.dropIdle(now)
	var e *entry
	if el, ok := k.entries[key]; ok {
		e = el.Value.(*entry)
		k.lru.MoveToFront(el)
	} else {
		if k.lru.Len() >= k.maxKeys {
			k.remove(k.lru.Back())
			k.evicted++
		}
		e = &entry{key: key, lim: rate.NewLimiter(k.limit, k.burst)}
		k.entries[key] = k.lru.PushFront(e)
	}
	e.seen = now
	d := Decision{Allowed: true, Limit: k.burst}
	r := e.lim.ReserveN(now, 1)
	if wait := r.DelayFrom(now); wait > 0 {
		r.CancelAt(now)
		d.Allowed, d.RetryAfter = false, wait
	}
	tokens := max(0, e.lim.TokensAt(now))
	d.Remaining = int(math.Floor(tokens))
	d.Reset = time.Duration((float64(k.burst) - tokens) / float64(k.limit) * float64(time.Second))
	return d
}

// dropIdle removes the buckets that have refilled completely. They sit at the back
// of the list, so this stops at the first one still in use.
func (k *Keyed) dropIdle(now time.Time) {
	for el := k.lru.Back(); el != nil; el = k.lru.Back() {
		if now.Sub(el.Value.(*entry).seen) < k.idle {
			return
		}
		k.remove(el)
	}
}

func (k *Keyed) remove(el *list.Element) {
	delete(k.entries, el.Value.(*entry).key)
	k.lru.Remove(el)
}

// Stats reports how many buckets are kept and how many were evicted while still in
// use because the map was full.
func (k *Keyed) Stats() (keys int, evicted uint64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.lru.Len(), k.evicted
}
