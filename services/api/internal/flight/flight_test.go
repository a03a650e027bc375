package flight_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/outboxtodo/outboxtodo/services/api/internal/flight"
)

// Overlapping callers share one call; a caller that goes away does not cancel it for
// the others, and its own answer is its context's error. The test runs in a synctest
// bubble, so that synctest.Wait tells when every caller is blocked on the call in flight.
func TestDoSharesOneCallNoCallerCancels(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var (
			g       flight.Group[int]
			calls   atomic.Int64
			release = make(chan struct{})
		)
		fn := func(ctx context.Context) (int, error) {
			calls.Add(1)
			<-release
			return 7, ctx.Err()
		}
		gone, leave := context.WithCancel(context.Background())
		left := make(chan error, 1)
		go func() {
			_, err := g.Do(gone, "k", time.Minute, fn)
			left <- err
		}()
		synctest.Wait() // the first caller's call is in flight
		var wg sync.WaitGroup
		results := make([]int, 3)
		for i := range results {
			wg.Go(func() {
				v, err := g.Do(context.Background(), "k", time.Minute, fn)
				if err != nil {
					t.Errorf("caller %d: %v", i, err)
				}
				results[i] = v
			})
		}
		leave()
		if err := <-left; !errors.Is(err, context.Canceled) {
			t.Fatalf("the caller that left got %v, want context.Canceled", err)
		}
		synctest.Wait() // every caller waits on the call in flight
		close(release)
		wg.Wait()
		if n := calls.Load(); n != 1 {
			t.Fatalf("%d calls, want 1", n)
		}
		for i, v := range results {
			if v != 7 {
				t.Fatalf("caller %d got %d, want 7", i, v)
			}
		}
	})
}

// The call's context ends after the timeout, whatever its callers' contexts say.
func TestDoBoundsTheCall(t *testing.T) {
	t.Parallel()
	var g flight.Group[string]
	_, err := g.Do(context.Background(), "k", 10*time.Millisecond, func(ctx context.Context) (string, error) {
		<-ctx.Done()
		return "", ctx.Err()
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want context.DeadlineExceeded", err)
	}
}
