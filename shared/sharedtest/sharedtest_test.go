package sharedtest_test

import (
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

func TestLogBuffer(t *testing.T) {
	t.Parallel()
	var buf sharedtest.LogBuffer
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() { fmt.Fprintf(&buf, "{\"n\":%d}\n", i) })
	}
	wg.Wait()
	lines, err := buf.Lines()
	if err != nil || len(lines) != 20 {
		t.Fatalf("Lines = %d lines, %v; want 20, nil", len(lines), err)
	}
	fmt.Fprintln(&buf, "not json")
	lines, err = buf.Lines()
	if err == nil || len(lines) != 20 {
		t.Fatalf("with a bad line: %d lines, err %v; want 20 and an error", len(lines), err)
	}
}

func TestEventually(t *testing.T) {
	n := 0
	sharedtest.Eventually(t, time.Second, func() (bool, string) {
		n++
		return n == 3, "not yet"
	})
	if n != 3 {
		t.Fatalf("cond ran %d times, want 3", n)
	}
}

func TestLoggerDropsLinesAfterTheTest(t *testing.T) {
	var log *slog.Logger
	t.Run("inner", func(t *testing.T) {
		log = sharedtest.Logger(t, slog.LevelInfo)
		log.Info("during the test")
	})
	log.Info("after the test") // would fail the run if it reached the ended t.Log
}
