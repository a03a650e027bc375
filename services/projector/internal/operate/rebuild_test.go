package operate_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/operate"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/projtest"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

// The first rebuild switches the readers away from the control database, which keeps
// the pointer and the dead letters: the summary must not tell the operator to drop it
// as it does an old rebuilt database.
func TestRebuildCommandKeepsTheControlDatabase(t *testing.T) {
	env := projtest.New(t)
	env.Setenv(t)
	t.Setenv("FERRETDB_POSTGRESQL_URL", env.Ferret.PostgreSQLURL())

	ctx := sharedtest.Context(t, 3*time.Minute)
	w := projtest.NewWorld(t)
	w.CreateTodo(w.CreateUser(), "a")
	env.Publish(t, w.Events...)

	var out bytes.Buffer
	if err := operate.Run(ctx, "rebuild", []string{"--database", "rebuilt_1", "--settle", "0s"}, &out, env.Log); err != nil {
		t.Fatalf("first rebuild: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "readers switched from "+env.Control+", the control database") || strings.Contains(out.String(), "drop it") {
		t.Fatalf("first rebuild's summary:\n%s", out.String())
	}
	out.Reset()
	if err := operate.Run(ctx, "rebuild", []string{"--database", "rebuilt_2", "--settle", "0s"}, &out, env.Log); err != nil {
		t.Fatalf("second rebuild: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "readers switched from rebuilt_1 (drop it when no longer needed)") {
		t.Fatalf("second rebuild's summary:\n%s", out.String())
	}
}
