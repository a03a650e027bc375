package todoctl_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/outboxtodo/outboxtodo/services/api/internal/pipelinetest"
	"github.com/outboxtodo/outboxtodo/services/api/internal/todoctl"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

func TestMain(m *testing.M) { pipelinetest.Main(m) }

// operatorsWorld is a pipeline with the tools' environment pointing at it, and a user
// who completed a todo, written through the API's store.
func operatorsWorld(t *testing.T) (*pipelinetest.Env, context.Context, *pipelinetest.Writer, uuid.UUID) {
	t.Helper()
	env := pipelinetest.New(t)
	env.ToolsEnv(t)
	w := pipelinetest.NewWriter(t, env.Store)
	u := w.CreateUser()
	w.SetCompleted(w.CreateTodo(u, "a"), true)
	return env, sharedtest.Context(t, 3*time.Minute), w, u
}

// run runs todoctl with args, logging to t, and returns what it printed.
func run(ctx context.Context, t *testing.T, args ...string) (string, error) {
	var out bytes.Buffer
	err := todoctl.Run(ctx, args, &out, sharedtest.Logger(t, slog.LevelInfo))
	return out.String(), err
}

// verifies is a condition for sharedtest.Eventually: todoctl verify passes.
func verifies(ctx context.Context, t *testing.T) func() (bool, string) {
	return func() (bool, string) {
		out, err := run(ctx, t, "verify")
		return err == nil, fmt.Sprintf("%v: %s", err, out)
	}
}

// verify, configured from the environment as an operator's: it passes once the
// projector has applied the stream, then catches a planted drift.
func TestVerifyCommand(t *testing.T) {
	env, ctx, w, u := operatorsWorld(t)
	w.CreateTodo(u, "b")
	env.RelayOutbox(t, env.Pool)
	env.StartProjector(t)

	sharedtest.Eventually(t, 60*time.Second, verifies(ctx, t))

	if _, err := env.Mongo.Database(pipelinetest.Control).Collection(readmodel.CollUsers).UpdateOne(ctx,
		bson.D{{Key: "_id", Value: u.String()}}, bson.D{{Key: "$set", Value: bson.D{{Key: "email", Value: "stale@example.com"}}}}); err != nil {
		t.Fatal(err)
	}
	out, err := run(ctx, t, "verify")
	if !errors.Is(err, todoctl.ErrDrift) || !strings.Contains(out, "users "+u.String()+": differs") {
		t.Fatalf("verify after drift = %v:\n%s", err, out)
	}
}

// The cut-over as an operator runs it: without --yes it changes nothing and names the
// running projector; with the projector stopped it replaces the stream and the read
// model; the projector started again (its durables, indexes and FerretDB's GIN
// indexes created at start) applies the re-emitted aggregates, and verify passes.
func TestRestoreCutoverCommand(t *testing.T) {
	env, ctx, _, _ := operatorsWorld(t)
	env.RelayOutbox(t, env.Pool)

	projector := env.StartProjector(t)
	sharedtest.Eventually(t, time.Minute, verifies(ctx, t))
	out, err := run(ctx, t, "restore-cutover")
	if err == nil || !strings.Contains(out, "running: projector replicas") || !strings.Contains(err.Error(), "drops read model "+pipelinetest.Control+" ") {
		t.Fatalf("restore-cutover without --yes, projector running = %v:\n%s", err, out)
	}
	projector.Stop()
	// A stopped replica's pull requests and heartbeat go as its connection closes.
	sharedtest.Eventually(t, time.Minute, func() (bool, string) {
		out, err = run(ctx, t, "restore-cutover", "--yes")
		return err == nil, fmt.Sprintf("%v: %s", err, out)
	})
	if !strings.Contains(out, "re-emitted 2,") {
		t.Fatalf("restore-cutover --yes:\n%s", out)
	}
	env.RelayOutbox(t, env.Pool)
	env.StartProjector(t)
	sharedtest.Eventually(t, time.Minute, verifies(ctx, t))
}
