package runner

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

// TestShortRun is the short fault run of `make test`: about 50 seconds of writes with
// several kills of each service and one restart of each server, then the full audit.
// `make chaos` runs the same code longer.
func TestShortRun(t *testing.T) {
	cfg := Config{
		Duration:     50 * time.Second,
		KillEvery:    6 * time.Second,
		RestartEvery: 11 * time.Second,
		Downtime:     2 * time.Second,
		Writers:      4,
		WritePause:   50 * time.Millisecond,
		Publishers:   2,
		Projectors:   2,
		QuietTimeout: 3 * time.Minute,
	}
	ctx := sharedtest.Context(t, 8*time.Minute)
	rep, err := Run(ctx, cfg, slog.New(slog.NewTextHandler(t.Output(), nil)))
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	var out strings.Builder
	rep.Print(&out)
	t.Log("\n" + out.String())
	if !rep.Pass() {
		t.Fatalf("%d problems (see above)", len(rep.Problems))
	}
	for _, svc := range []string{"api", "publisher", "projector"} {
		if rep.Kills[svc] < 3 {
			t.Errorf("%s killed %d times, want at least 3", svc, rep.Kills[svc])
		}
	}
	for _, srv := range []string{"nats", "ferretdb", "postgresql"} {
		if rep.Restarts[srv] < 1 {
			t.Errorf("%s restarted %d times, want at least 1", srv, rep.Restarts[srv])
		}
	}
	if rep.Acked == 0 || rep.Events == 0 || rep.Documents == 0 {
		t.Errorf("no work judged: acked=%d events=%d documents=%d", rep.Acked, rep.Events, rep.Documents)
	}
}
