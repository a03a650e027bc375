package process_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outboxtodo/outboxtodo/shared/process"
)

// untilDone is a task that works until its context ends, then returns err.
func untilDone(stopped *atomic.Int32, err error) func(context.Context) error {
	return func(ctx context.Context) error {
		<-ctx.Done()
		stopped.Add(1)
		return err
	}
}

// runUntilCancelled runs tasks, checks that they keep running until ctx is cancelled,
// and returns RunTasks' result.
func runUntilCancelled(t *testing.T, tasks ...process.Task) error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- process.RunTasks(ctx, tasks...) }()
	select {
	case err := <-done:
		t.Fatalf("returned before ctx ended: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	cancel()
	return <-done
}

func TestRunTasksStopsAllOnCancel(t *testing.T) {
	t.Parallel()
	var stopped atomic.Int32
	err := runUntilCancelled(t,
		process.Task{Name: "a", Run: untilDone(&stopped, nil)},
		process.Task{Name: "b", Run: untilDone(&stopped, nil)},
	)
	if err != nil {
		t.Fatalf("clean stop returned %v", err)
	}
	if n := stopped.Load(); n != 2 {
		t.Fatalf("%d of 2 tasks stopped", n)
	}
}

func TestRunTasksFirstFailureStopsTheOthersAndErrorsJoin(t *testing.T) {
	t.Parallel()
	var stopped atomic.Int32
	boom, late := errors.New("boom"), errors.New("failed while stopping")
	err := process.RunTasks(context.Background(),
		process.Task{Name: "server", Run: untilDone(&stopped, nil)},
		process.Task{Name: "loop", Run: untilDone(&stopped, late)},
		process.Task{Name: "broken", Run: func(context.Context) error { return boom }},
	)
	if n := stopped.Load(); n != 2 {
		t.Fatalf("%d of 2 running tasks stopped after the failure", n)
	}
	if !errors.Is(err, boom) || !errors.Is(err, late) {
		t.Fatalf("error %v does not join both failures", err)
	}
	for _, want := range []string{"broken: boom", "loop: failed while stopping"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name its task: want %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "server") {
		t.Errorf("error %q names a task that did not fail", err)
	}
}

func TestRunTasksNilReturnStopsNothing(t *testing.T) {
	t.Parallel()
	var stopped atomic.Int32
	err := runUntilCancelled(t,
		process.Task{Name: "off", Run: func(context.Context) error { return nil }},
		process.Task{Name: "on", Run: untilDone(&stopped, nil)},
	)
	if err != nil {
		t.Fatal(err)
	}
	if n := stopped.Load(); n != 1 {
		t.Fatalf("%d of 1 running task stopped", n)
	}
}

// Every waits an interval before the first call, calls fn again at each tick, and
// returns once ctx ends.
func TestEvery(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	var first time.Duration
	calls := 0
	process.Every(ctx, 10*time.Millisecond, func() {
		if calls++; calls == 1 {
			first = time.Since(start)
		}
		if calls == 3 {
			cancel()
		}
	})
	// A tick that came with the end of ctx may still be served: at most one more.
	if calls != 3 && calls != 4 {
		t.Fatalf("fn called %d times, ctx ending at the third call; want 3 or 4", calls)
	}
	if first < 10*time.Millisecond {
		t.Fatalf("first call after %v, want one interval (10ms) or more", first)
	}
}
