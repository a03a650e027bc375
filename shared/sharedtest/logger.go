package sharedtest

import (
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// Logger returns a JSON logger at level that writes to t.Log, so a test's logs show
// with its failure only. Lines written after t ends, by goroutines still stopping, are
// dropped: t.Log would fail the run for them.
func Logger(t testing.TB, level slog.Level) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}

type testWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}
