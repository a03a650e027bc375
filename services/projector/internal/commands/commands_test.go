package commands_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/commands"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/projtest"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/outbox"
	"github.com/outboxtodo/outboxtodo/shared/postgres"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
)

// The projector running in-process, configured from the environment as in
// production, applies the stream: verify passes, then catches a planted drift.
func TestVerifyCommand(t *testing.T) {
	env := projtest.New(t)
	pool := toolsEnv(t, env)
	t.Setenv("ADMIN_ADDR", "127.0.0.1:0")
	t.Setenv("FETCH_WAIT", "200ms")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w := projtest.NewWorld(t)
	u := w.CreateUser()
	w.SetCompleted(w.CreateTodo(u, "a"), true)
	w.CreateTodo(u, "b")
	if err := w.WriteSource(ctx, pool); err != nil {
		t.Fatal(err)
	}
	env.Publish(t, w.Events...)

	runUntilStopped(t, ctx, env)

	var out bytes.Buffer
	projtest.Eventually(t, 60*time.Second, func() (bool, string) {
		out.Reset()
		err := commands.Run(ctx, "verify", nil, &out, env.Log)
		return err == nil, fmt.Sprintf("%v: %s", err, out.String())
	})

	if _, err := env.Mongo.Database(env.Control).Collection(readmodel.CollUsers).UpdateOne(ctx,
		bson.D{{Key: "_id", Value: u.String()}}, bson.D{{Key: "$set", Value: bson.D{{Key: "email", Value: "stale@example.com"}}}}); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	err := commands.Run(ctx, "verify", nil, &out, env.Log)
	if !errors.Is(err, commands.ErrDrift) || !strings.Contains(out.String(), "users "+u.String()+": differs") {
		t.Fatalf("verify after drift = %v:\n%s", err, out.String())
	}
}

// toolsEnv points the commands at env and at a new PostgreSQL database, as an operator's
// environment would, and returns that database's pool.
func toolsEnv(t *testing.T, env *projtest.Env) *pgxpool.Pool {
	t.Helper()
	pool, dbURL := dbtest.NewPool(t)
	t.Setenv("NATS_URL", env.NATS.ClientURL())
	t.Setenv("MONGODB_URI", env.Ferret.URI())
	t.Setenv("MONGODB_DATABASE", env.Control)
	t.Setenv("FERRETDB_POSTGRESQL_URL", env.Ferret.PostgreSQLURL())
	t.Setenv("DATABASE_URL", dbURL)
	return pool
}

// publishOutbox writes events to the outbox and relays them into env's stream, as the
// API and the publisher would.
func publishOutbox(t *testing.T, ctx context.Context, env *projtest.Env, pool *pgxpool.Pool, events []event.Envelope) {
	t.Helper()
	if err := postgres.WithTx(ctx, pool, func(tx pgx.Tx) error { return outbox.Insert(ctx, tx, events...) }); err != nil {
		t.Fatal(err)
	}
	env.RelayOutbox(t, pool)
}
