package todoctl_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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
	env.ToolsEnv(t, env.DBURL)
	w := pipelinetest.NewWriter(t, env.Store)
	u := w.CreateUser()
	w.SetCompleted(w.CreateTodo(u, "a"), true)
	return env, pipelinetest.Context(t, 3*time.Minute), w, u
}

// verifies is a condition for sharedtest.Eventually: todoctl verify passes.
func verifies(ctx context.Context) func() (bool, string) {
	return func() (bool, string) {
		var out bytes.Buffer
		err := todoctl.Run(ctx, []string{"verify"}, &out)
		return err == nil, fmt.Sprintf("%v: %s", err, out.String())
	}
}

// verify, configured from the environment as an operator's: it passes once the
// projector has applied the stream, then catches a planted drift.
func TestVerifyCommand(t *testing.T) {
	env, ctx, w, u := operatorsWorld(t)
	w.CreateTodo(u, "b")
	env.RelayOutbox(t, env.Pool)
	env.StartProjector(t)

	sharedtest.Eventually(t, 60*time.Second, verifies(ctx))

	if _, err := env.Mongo.Database(pipelinetest.Control).Collection(readmodel.CollUsers).UpdateOne(ctx,
		bson.D{{Key: "_id", Value: u.String()}}, bson.D{{Key: "$set", Value: bson.D{{Key: "email", Value: "stale@example.com"}}}}); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err := todoctl.Run(ctx, []string{"verify"}, &out)
	if !errors.Is(err, todoctl.ErrDrift) || !strings.Contains(out.String(), "users "+u.String()+": differs") {
		t.Fatalf("verify after drift = %v:\n%s", err, out.String())
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
	sharedtest.Eventually(t, time.Minute, verifies(ctx))
	var out bytes.Buffer
	err := todoctl.Run(ctx, []string{"restore-cutover"}, &out)
	if err == nil || !strings.Contains(out.String(), "running: projector replicas") || !strings.Contains(err.Error(), "drops read model "+pipelinetest.Control+" ") {
		t.Fatalf("restore-cutover without --yes, projector running = %v:\n%s", err, out.String())
	}
	projector.Stop()
	// A stopped replica's pull requests and heartbeat go as its connection closes.
	sharedtest.Eventually(t, time.Minute, func() (bool, string) {
		out.Reset()
		err := todoctl.Run(ctx, []string{"restore-cutover", "--yes"}, &out)
		return err == nil, fmt.Sprintf("%v: %s", err, out.String())
	})
	if !strings.Contains(out.String(), "re-emitted 2,") {
		t.Fatalf("restore-cutover --yes:\n%s", out.String())
	}
	env.RelayOutbox(t, env.Pool)
	env.StartProjector(t)
	sharedtest.Eventually(t, time.Minute, verifies(ctx))
}
