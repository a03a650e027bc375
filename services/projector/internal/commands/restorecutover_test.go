package commands_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/app"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/commands"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/config"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/projtest"
	"github.com/outboxtodo/outboxtodo/shared/process"
)

// The cut-over as an operator runs it: without --yes it changes nothing and names the
// running projector; with the projector stopped it replaces the stream and the read
// model; the projector started again (its durables, indexes and FerretDB's GIN
// indexes created at start) applies the re-emitted aggregates, and verify passes.
func TestRestoreCutoverCommand(t *testing.T) {
	env := projtest.New(t)
	pool := toolsEnv(t, env)
	t.Setenv("ADMIN_ADDR", "127.0.0.1:0")
	t.Setenv("FETCH_WAIT", "200ms")

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	w := projtest.NewWorld(t)
	u := w.CreateUser()
	w.SetCompleted(w.CreateTodo(u, "a"), true)
	if err := w.WriteSource(ctx, pool); err != nil {
		t.Fatal(err)
	}
	publishOutbox(t, ctx, env, pool, w.Events)

	stop := runUntilStopped(t, ctx, env)
	var out bytes.Buffer
	projtest.Eventually(t, time.Minute, func() (bool, string) {
		out.Reset()
		err := commands.Run(ctx, "verify", nil, &out, env.Log)
		return err == nil, fmt.Sprintf("%v: %s", err, out.String())
	})
	out.Reset()
	err := commands.Run(ctx, "restore-cutover", nil, &out, env.Log)
	if err == nil || !strings.Contains(out.String(), "running: projector replicas") || !strings.Contains(err.Error(), "drops read model "+env.Control+" ") {
		t.Fatalf("restore-cutover without --yes, projector running = %v:\n%s", err, out.String())
	}
	stop()
	// A stopped replica's pull requests and heartbeat go as its connection closes.
	projtest.Eventually(t, time.Minute, func() (bool, string) {
		out.Reset()
		err := commands.Run(ctx, "restore-cutover", []string{"--yes"}, &out, env.Log)
		return err == nil, fmt.Sprintf("%v: %s", err, out.String())
	})
	if !strings.Contains(out.String(), "re-emitted 2,") {
		t.Fatalf("restore-cutover --yes:\n%s", out.String())
	}
	env.RelayOutbox(t, pool)
	runUntilStopped(t, ctx, env)
	projtest.Eventually(t, time.Minute, func() (bool, string) {
		out.Reset()
		err := commands.Run(ctx, "verify", nil, &out, env.Log)
		return err == nil, fmt.Sprintf("%v: %s", err, out.String())
	})
}

// runUntilStopped runs the projector as main does, configured from the environment,
// until the returned stop (SIGTERM) or the end of the test.
func runUntilStopped(t *testing.T, ctx context.Context, env *projtest.Env) (stop func()) {
	t.Helper()
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- process.RunApp(runCtx, env.Log, config.Load, app.New) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}
