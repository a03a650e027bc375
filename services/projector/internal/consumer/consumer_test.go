package consumer_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/deadletter"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/metrics"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/project"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/projtest"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

// drained reports whether the consumer has every message delivered and acknowledged.
func drained(env *projtest.Env, durable string) func() (bool, string) {
	return func() (bool, string) {
		info, err := env.ConsumerInfo(durable)
		if err != nil {
			return false, err.Error()
		}
		return info.NumPending == 0 && info.NumAckPending == 0,
			fmt.Sprintf("pending %d, ack pending %d", info.NumPending, info.NumAckPending)
	}
}

func deadLetters(t *testing.T, env *projtest.Env) []readmodel.DeadLetter {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dls, err := deadletter.New(env.Store.Control()).List(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	return dls
}

// simpleWorld is a few users with todos in several states, and a deleted user.
func simpleWorld(t *testing.T, users, todos int) *projtest.World {
	w := projtest.NewWorld(t)
	for i := range users {
		u := w.CreateUser()
		for j := range todos {
			td := w.CreateTodo(u, fmt.Sprintf("todo %d", j))
			if (i+j)%2 == 0 {
				w.SetCompleted(td, true)
			}
		}
		if i == 0 {
			w.RenameUser(u, "renamed")
		}
	}
	gone := w.CreateUser()
	w.CreateTodo(gone, "gone")
	w.DeleteUser(gone)
	return w
}

// Duplicates and reordered deliveries injected straight into the stream, applied by
// two replicas: the read model equals the source, leaderboard included.
func TestTwoReplicasShuffledDuplicatedConverge(t *testing.T) {
	t.Parallel()
	env := projtest.New(t)
	w := simpleWorld(t, 6, 4)
	rng := rand.New(rand.NewPCG(7, 9))
	shuffled := append([]event.Envelope(nil), w.Events...)
	rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	env.Publish(t, shuffled...)
	// Every event again, out of order, past the duplicate window's reach.
	rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	env.PublishRedelivery(t, shuffled...)

	cfg := env.ConsumerConfig("projector")
	cfg.BatchSize = 10 // many small batches, so the replicas interleave
	a, b := env.Start(t, cfg), env.Start(t, cfg)
	sharedtest.Eventually(t, 90*time.Second, env.Converged(w))
	sharedtest.Eventually(t, 30*time.Second, drained(env, "projector"))

	applied := testutil.ToFloat64(a.Metrics.Events.WithLabelValues(metrics.OutcomeApplied)) +
		testutil.ToFloat64(b.Metrics.Events.WithLabelValues(metrics.OutcomeApplied))
	stale := testutil.ToFloat64(a.Metrics.Events.WithLabelValues(metrics.OutcomeStale)) +
		testutil.ToFloat64(b.Metrics.Events.WithLabelValues(metrics.OutcomeStale))
	if applied == 0 || stale == 0 || applied+stale < float64(2*len(w.Events)) {
		t.Errorf("applied %v + stale %v, want both non-zero and at least %d in all", applied, stale, 2*len(w.Events))
	}
	if n := len(deadLetters(t, env)); n != 0 {
		t.Errorf("%d dead letters, want none", n)
	}

	ctx := context.Background()
	want := w.Snapshot()
	active, err := env.Store.Active(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lb := projtest.Leaderboard(t, active)
	if len(lb) != len(w.Users) {
		t.Fatalf("leaderboard has %d users, want %d", len(lb), len(w.Users))
	}
	for i, e := range lb {
		ws := want.Stats[e.UserID]
		if e.Completed != ws.Completed || e.Total != ws.Total || e.DisplayName != want.Users[e.UserID].DisplayName {
			t.Errorf("leaderboard line %+v, want completed %d total %d name %q", e, ws.Completed, ws.Total, want.Users[e.UserID].DisplayName)
		}
		if i > 0 && (lb[i-1].Completed < e.Completed || (lb[i-1].Completed == e.Completed && lb[i-1].UserID > e.UserID)) {
			t.Errorf("line %d out of order: %+v after %+v", i, e, lb[i-1])
		}
	}
	var wm readmodel.Watermark
	if err := active.Collection(readmodel.CollProjection).FindOne(ctx, bson.D{{Key: "_id", Value: readmodel.WatermarkID}}).Decode(&wm); err != nil {
		t.Fatalf("watermark: %v", err)
	}
	if wm.StreamSeq != uint64(2*len(w.Events)) {
		t.Errorf("watermark at %d, want the last sequence %d", wm.StreamSeq, 2*len(w.Events))
	}
}

// Stopped projector: events pile up in the stream; restarted, it converges.
func TestProjectorRestartCatchesUp(t *testing.T) {
	t.Parallel()
	env := projtest.New(t)
	w := simpleWorld(t, 3, 3)
	half := len(w.Events) / 2
	env.Publish(t, w.Events[:half]...)
	r := env.Start(t, env.ConsumerConfig("projector"))
	sharedtest.Eventually(t, 60*time.Second, func() (bool, string) {
		n := testutil.ToFloat64(r.Metrics.Events.WithLabelValues(metrics.OutcomeApplied))
		return n == float64(half), fmt.Sprintf("%v of %d applied", n, half)
	})
	r.Stop()
	env.Publish(t, w.Events[half:]...)
	// The server updates the consumer's pending count as the messages land: poll it.
	sharedtest.Eventually(t, 10*time.Second, func() (bool, string) {
		info, err := env.ConsumerInfo("projector")
		if err != nil {
			return false, err.Error()
		}
		return info.NumPending == uint64(len(w.Events)-half) && info.NumAckPending == 0,
			fmt.Sprintf("pending %d, ack pending %d while stopped, want %d and 0", info.NumPending, info.NumAckPending, len(w.Events)-half)
	})
	env.Start(t, env.ConsumerConfig("projector"))
	sharedtest.Eventually(t, 60*time.Second, env.Converged(w))
}

// The MongoDB server stopped mid-run and started again: the projector holds its batch,
// resumes by itself, loses nothing and dead-letters nothing.
func TestMongoOutageConvergesWithoutDeadLetters(t *testing.T) {
	t.Parallel()
	env := projtest.New(t)
	outageConverges(t, env, "an outage", func() {
		if err := env.Ferret.Stop(); err != nil {
			t.Fatal(err)
		}
	}, func() {
		if err := env.Ferret.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
}

// outageConverges applies half of a world, begins an outage with down, publishes the
// other half, and ends the outage with up only once the projector has failed on it
// several times and the held messages have outlived AckWait (kept alive by
// InProgress). The read model must then converge with nothing dead-lettered, though
// a message's second delivery is its last (MaxDeliver 2): an outage must neither use
// up deliveries nor count as the rejection of a write.
func outageConverges(t *testing.T, env *projtest.Env, outage string, down, up func()) {
	t.Helper()
	w := simpleWorld(t, 4, 3)
	half := len(w.Events) / 2
	cfg := env.ConsumerConfig("projector")
	cfg.MaxDeliver = 2
	cfg.AckWait = 3 * time.Second
	cfg.WriteTimeout = time.Second
	r := env.Start(t, cfg)
	env.Publish(t, w.Events[:half]...)
	sharedtest.Eventually(t, 60*time.Second, func() (bool, string) {
		n := testutil.ToFloat64(r.Metrics.Events.WithLabelValues(metrics.OutcomeApplied))
		return n == float64(half), fmt.Sprintf("%v of %d applied", n, half)
	})

	down()
	downAt := time.Now()
	env.Publish(t, w.Events[half:]...)
	sharedtest.Eventually(t, 60*time.Second, func() (bool, string) {
		n := testutil.ToFloat64(r.Metrics.Events.WithLabelValues(metrics.OutcomeFailed))
		return n >= 3 && time.Since(downAt) > cfg.AckWait+time.Second, fmt.Sprintf("%v failed attempts", n)
	})
	up()

	sharedtest.Eventually(t, 90*time.Second, env.Converged(w))
	if dls := deadLetters(t, env); len(dls) != 0 {
		t.Fatalf("dead letters after %s: %+v", outage, dls)
	}
	if n := testutil.ToFloat64(r.Metrics.Events.WithLabelValues(metrics.OutcomeDeadLettered)); n != 0 {
		t.Fatalf("dead-lettered counter = %v, want 0", n)
	}
}

// A poison message lands in dead letters with its error and the raw message, is
// counted, the rest of the stream keeps flowing, and redrive sends it through again.
func TestPoisonDeadLetteredAndRedriven(t *testing.T) {
	t.Parallel()
	env := projtest.New(t)
	w := simpleWorld(t, 2, 2)
	subject := projtest.Prefix + ".todo.x.y"
	ctx := sharedtest.Context(t, time.Minute)
	msg := nats.NewMsg(subject)
	msg.Data = []byte(`{"id": "not json`)
	msg.Header.Set(jetstream.MsgIDHeader, "poison-1")
	msg.Header.Set("Traceparent", "00-abc-def-01")
	if _, err := env.JS.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	env.Publish(t, w.Events...)
	r := env.Start(t, env.ConsumerConfig("projector"))
	sharedtest.Eventually(t, 60*time.Second, env.Converged(w))

	dls := deadLetters(t, env)
	if len(dls) != 1 {
		t.Fatalf("%d dead letters, want 1: %+v", len(dls), dls)
	}
	dl := dls[0]
	// Stored behind its owner's partition by the stream's transform.
	if dl.StreamSeq != 1 || !strings.HasSuffix(dl.Subject, "."+subject) || string(dl.Data) != string(msg.Data) ||
		dl.Headers["Traceparent"][0] != "00-abc-def-01" || !strings.Contains(dl.Error, "malformed event") || dl.RedrivenAt != nil {
		t.Fatalf("dead letter = %+v", dl)
	}
	if n := testutil.ToFloat64(r.Metrics.Events.WithLabelValues(metrics.OutcomeDeadLettered)); n != 1 {
		t.Fatalf("dead-lettered counter = %v, want 1", n)
	}
	sharedtest.Eventually(t, 10*time.Second, func() (bool, string) {
		n := testutil.ToFloat64(r.Metrics.DeadLetters)
		return n == 1, fmt.Sprintf("dead letters gauge %v", n)
	})
	store := deadletter.New(env.Store.Control())
	if n, err := store.Count(ctx); err != nil || n != 1 {
		t.Fatalf("pending dead letters = %d, %v; want 1", n, err)
	}

	// The same bytes cannot succeed: the redrive reports the error and the dead letter
	// stays pending.
	active, err := env.Store.Active(ctx)
	if err != nil {
		t.Fatal(err)
	}
	apply := project.New(active, 1).ApplyRaw
	outcomes, err := store.Redrive(ctx, apply, []string{dl.ID})
	if err != nil || len(outcomes) != 1 || outcomes[0].Err == nil {
		t.Fatalf("redrive of poison = %+v, %v; want its error", outcomes, err)
	}
	if n, err := store.Count(ctx); err != nil || n != 1 {
		t.Fatalf("pending after a failed redrive = %d, %v; want 1", n, err)
	}

	// A dead letter of a good event (recorded, say, by a projector build that could not
	// read it) applies once redriven, and is no longer counted.
	late := projtest.NewWorld(t)
	late.CreateUser()
	ev := late.Events[0]
	body, err := ev.Encode()
	if err != nil {
		t.Fatal(err)
	}
	good := readmodel.DeadLetter{ID: deadletter.ID(env.Stream, 999), Stream: env.Stream, StreamSeq: 999,
		Subject: event.Subject(projtest.Prefix, ev), Headers: map[string][]string{jetstream.MsgIDHeader: {ev.ID.String()}},
		Data: body, Error: "unsupported event schema version", DeadAt: time.Now()}
	if _, err := env.Store.Control().Collection(readmodel.CollDeadLetters).InsertOne(ctx, good); err != nil {
		t.Fatal(err)
	}
	outcomes, err = store.Redrive(ctx, apply, nil)
	if err != nil || len(outcomes) != 2 {
		t.Fatalf("redrive of all pending = %+v, %v; want two outcomes", outcomes, err)
	}
	for _, o := range outcomes {
		if (o.ID == good.ID) != (o.Err == nil) {
			t.Errorf("outcome %+v: want only the good event applied", o)
		}
	}
	for id, u := range late.Users {
		w.Users[id], w.Stats[id] = u, late.Stats[id]
	}
	if ok, why := env.Converged(w)(); !ok {
		t.Fatalf("after redrive: %s", why)
	}
	if n, err := store.Count(ctx); err != nil || n != 1 {
		t.Fatalf("pending dead letters after redrive = %d, %v; want the poison only", n, err)
	}
}

// A document MongoDB keeps refusing is retried with a delay and dead-lettered on its
// last delivery (MaxDeliver), while the rest of the stream flows. The refusal here is
// FerretDB's: its PostgreSQL backend cannot store a NUL character.
func TestRejectedWriteDeadLetteredAfterMaxDeliver(t *testing.T) {
	t.Parallel()
	env := projtest.New(t)
	w := simpleWorld(t, 2, 2)
	bad := refusedTodo(t, w)
	env.Publish(t, w.Events[:3]...)
	env.Publish(t, bad.Events...)
	env.Publish(t, w.Events[3:]...)

	cfg := env.ConsumerConfig("projector")
	cfg.MaxDeliver = 2
	r := env.Start(t, cfg)
	sharedtest.Eventually(t, 60*time.Second, env.Converged(w))
	sharedtest.Eventually(t, 30*time.Second, func() (bool, string) {
		dls := deadLetters(t, env)
		return len(dls) == 1, fmt.Sprintf("%d dead letters", len(dls))
	})
	dl := deadLetters(t, env)[0]
	if dl.StreamSeq != 4 || dl.Deliveries != 2 || !strings.Contains(dl.Error, "upsert todos") {
		t.Fatalf("dead letter = %+v, want seq 4 after 2 deliveries with the write error", dl)
	}
	if n := testutil.ToFloat64(r.Metrics.Events.WithLabelValues(metrics.OutcomeFailed)); n < 1 {
		t.Fatalf("failed counter = %v, want the first delivery's failure", n)
	}
	sharedtest.Eventually(t, 30*time.Second, drained(env, "projector"))
}

// refusedTodo is a world holding one event MongoDB refuses to apply: a todo of one of
// w's users whose title FerretDB's PostgreSQL backend cannot store (a NUL character).
func refusedTodo(t *testing.T, w *projtest.World) *projtest.World {
	t.Helper()
	bad := projtest.NewWorld(t)
	for id, u := range w.Users {
		bad.Users[id] = u
		bad.CreateTodo(id, "nul \x00 title")
		return bad
	}
	t.Fatal("the world has no user")
	return nil
}
