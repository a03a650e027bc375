package sharedtest

import (
	"testing"
	"time"
)

// Eventually polls cond every 50 ms until it holds or timeout passes, then fails t
// with cond's last explanation.
func Eventually(t testing.TB, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %s: %s", timeout, why)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
