package ratelimit_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/outboxtodo/outboxtodo/services/api/internal/apitest"
	"github.com/outboxtodo/outboxtodo/services/api/internal/ratelimit"
)

func newKeyed(t *testing.T, perSecond float64, burst, maxKeys int) (*ratelimit.Keyed, *apitest.Clock) {
	t.Helper()
	c := apitest.NewClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	k, err := ratelimit.New(ratelimit.Config{PerSecond: perSecond, Burst: burst, MaxKeys: maxKeys, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	return k, c
}

func TestBurstThenRetryAfter(t *testing.T) {
	t.Parallel()
	k, c := newKeyed(t, 2, 3, 10)
	for i := range 3 {
		if !k.Take("a").Allowed {
			t.Fatalf("request %d of the burst refused", i)
		}
	}
	d := k.Take("a")
	ok, wait := d.Allowed, d.RetryAfter
	if ok || wait != 500*time.Millisecond {
		t.Fatalf("after the burst: %v, wait %v; want refused for 500ms", ok, wait)
	}
	// A refusal takes no token: the wait does not grow with refused requests.
	if again := k.Take("a").RetryAfter; again != wait {
		t.Fatalf("wait grew to %v", again)
	}
	if !k.Take("b").Allowed {
		t.Fatal("another key shares a's bucket")
	}
	c.Advance(500 * time.Millisecond)
	if !k.Take("a").Allowed {
		t.Fatal("refused after waiting the advertised time")
	}
	if k.Take("a").Allowed {
		t.Fatal("more than the rate allowed")
	}
}

func TestIdleBucketsAreDropped(t *testing.T) {
	t.Parallel()
	k, c := newKeyed(t, 10, 5, 1000)
	for i := range 100 {
		k.Take(fmt.Sprint(i))
	}
	if n, _ := k.Stats(); n != 100 {
		t.Fatalf("%d keys, want 100", n)
	}
	c.Advance(500 * time.Millisecond) // burst/rate: every bucket is full again
	k.Take("new")
	if n, ev := k.Stats(); n != 1 || ev != 0 {
		t.Fatalf("%d keys and %d evictions after the idle time, want 1 and 0", n, ev)
	}
}

func TestMapIsBounded(t *testing.T) {
	t.Parallel()
	k, _ := newKeyed(t, 1, 1, 50)
	for i := range 1000 {
		if !k.Take(fmt.Sprint(i)).Allowed {
			t.Fatalf("new key %d refused", i)
		}
	}
	if n, ev := k.Stats(); n != 50 || ev != 950 {
		t.Fatalf("%d keys, %d evictions; want 50 and 950", n, ev)
	}
	// The most recent keys are the ones kept.
	if k.Take("999").Allowed {
		t.Fatal("the most recent key lost its bucket")
	}
}

func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	k, _ := newKeyed(t, 1, 100, 10)
	var mu sync.Mutex
	allowed := 0
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				if k.Take("shared").Allowed {
					mu.Lock()
					allowed++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if allowed != 100 {
		t.Fatalf("%d allowed with a frozen clock, want the burst of 100", allowed)
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	for _, c := range []ratelimit.Config{
		{PerSecond: 0, Burst: 1, MaxKeys: 1},
		{PerSecond: 1, Burst: 0, MaxKeys: 1},
		{PerSecond: 1, Burst: 1, MaxKeys: 0},
	} {
		if _, err := ratelimit.New(c); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

// TestTakeReportsTheBudget: what Take says of the bucket is what a client is told in
// the RateLimit headers: the bucket's size, what is left after this request, and when
// it is full again.
func TestTakeReportsTheBudget(t *testing.T) {
	t.Parallel()
	k, c := newKeyed(t, 2, 4, 10) // 2/s, burst 4
	want := []ratelimit.Decision{
		{Allowed: true, Limit: 4, Remaining: 3, Reset: 500 * time.Millisecond},
		{Allowed: true, Limit: 4, Remaining: 2, Reset: time.Second},
		{Allowed: true, Limit: 4, Remaining: 1, Reset: 1500 * time.Millisecond},
		{Allowed: true, Limit: 4, Remaining: 0, Reset: 2 * time.Second},
		{Allowed: false, RetryAfter: 500 * time.Millisecond, Limit: 4, Remaining: 0, Reset: 2 * time.Second},
	}
	for i, w := range want {
		if got := k.Take("a"); got != w {
			t.Fatalf("take %d: %+v, want %+v", i+1, got, w)
		}
	}
	c.Advance(time.Second) // two tokens back
	if got := k.Take("a"); !got.Allowed || got.Remaining != 1 || got.Reset != 1500*time.Millisecond {
		t.Fatalf("after 1 s: %+v", got)
	}
}
