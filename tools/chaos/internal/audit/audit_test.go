package audit

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
	"github.com/outboxtodo/outboxtodo/tools/chaos/internal/workload"
	"github.com/outboxtodo/outboxtodo/tools/devstack/natsserver"
)

// Check passes a consistent run, then reports each kind of broken expectation.
func TestCheckFindsEachViolation(t *testing.T) {
	t.Parallel()
	ctx := sharedtest.Context(t, time.Minute)
	pool, _ := dbtest.NewPool(t)
	_, js := natsserver.Connect(t, natsserver.NewTest(t, nil).ClientURL())
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{event.StreamSubjects("t")}}); err != nil {
		t.Fatal(err)
	}
	// publish returns the message's stream sequence.
	publish := func(e event.Envelope, id string) uint64 {
		t.Helper()
		b, err := e.Encode()
		if err != nil {
			t.Fatal(err)
		}
		ack, err := js.Publish(ctx, event.Subject("t", e), b, jetstream.WithMsgID(id))
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	mk := func(owner uuid.UUID, typ string, agg uuid.UUID, v int64, data any) event.Envelope {
		t.Helper()
		e, err := event.New(typ, agg, owner, v, now, event.TraceContext{}, data)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	user, todo := uuid.New(), uuid.New()
	signUp := mk(user, event.UserCreated, user, 1, event.UserData{ID: user, Email: "u@example.com", DisplayName: "u", Version: 1, CreatedAt: now, UpdatedAt: now})
	create := mk(user, event.TodoCreated, todo, 1, event.TodoData{ID: todo, UserID: user, Title: "first", Priority: "low", Version: 1, CreatedAt: now, UpdatedAt: now})
	writeOutbox(ctx, t, pool, signUp, create)
	if _, err := pool.Exec(ctx, `INSERT INTO users (id, email, display_name, version, created_at, updated_at) VALUES ($1, 'u@example.com', 'u', 1, $2, $2)`, user, now); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO todos (id, user_id, title, priority, version, created_at, updated_at) VALUES ($1, $2, 'first', 'low', 1, $3, $3)`, todo, user, now); err != nil {
		t.Fatal(err)
	}
	publish(signUp, signUp.ID.String())
	publish(create, create.ID.String())
	// The publisher moves published rows out of the outbox into outbox_published.
	published := func(e event.Envelope) {
		t.Helper()
		if _, err := pool.Exec(ctx, `
WITH moved AS (
    DELETE FROM outbox WHERE event_id = $1
    RETURNING event_id, partition, aggregate_type, aggregate_id, aggregate_version, event_type, created_at)
INSERT INTO outbox_published (event_id, partition, aggregate_type, aggregate_id, aggregate_version, event_type, created_at, published_at)
SELECT event_id, partition, aggregate_type, aggregate_id, aggregate_version, event_type, created_at, now() FROM moved`, e.ID); err != nil {
			t.Fatal(err)
		}
	}
	published(signUp)
	writes := []workload.Write{
		{Kind: workload.SignUp, Outcome: workload.Acked, Aggregate: user, User: user, Version: 1, Marker: "u@example.com"},
		{Kind: workload.CreateTodo, Outcome: workload.Acked, Aggregate: todo, User: user, Version: 1, Marker: "first"},
		{Kind: workload.CreateTodo, Outcome: workload.Failed, User: user, Marker: "never written"},
	}
	res, err := Check(ctx, pool, js, "S", writes)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Problems) != 0 || res.Events != 2 || res.StreamMsgs != 2 {
		t.Fatalf("consistent run: %+v, want no problems, 2 events, 2 messages", res)
	}

	// Broken: an acked update that never committed; a failed update that did; its
	// event never published; a stray message; a failed delete that deleted.
	leaked := mk(user, event.TodoUpdated, todo, 2, event.TodoData{ID: todo, UserID: user, Title: "leaked", Priority: "low", Version: 2, CreatedAt: now, UpdatedAt: now})
	writeOutbox(ctx, t, pool, leaked)
	if _, err := pool.Exec(ctx, `UPDATE todos SET version = 2, title = 'leaked' WHERE id = $1`, todo); err != nil {
		t.Fatal(err)
	}
	// A failed sign-up that did commit, whose event was published since.
	ghost := uuid.New()
	ghostUp := mk(user, event.UserCreated, ghost, 1, event.UserData{ID: ghost, Email: "ghost@example.com", DisplayName: "g", Version: 1, CreatedAt: now, UpdatedAt: now})
	writeOutbox(ctx, t, pool, ghostUp)
	publish(ghostUp, ghostUp.ID.String())
	published(ghostUp)
	stray := uuid.NewString()
	publish(create, stray)
	gone := uuid.New()
	writes = append(writes,
		workload.Write{Kind: workload.PatchTodo, Outcome: workload.Acked, Aggregate: todo, User: user, Version: 3, Marker: "acked"},
		workload.Write{Kind: workload.PatchTodo, Outcome: workload.Failed, Aggregate: todo, User: user, Marker: "leaked"},
		workload.Write{Kind: workload.DeleteTodo, Outcome: workload.Failed, Aggregate: gone, User: user},
		workload.Write{Kind: workload.SignUp, Outcome: workload.Failed, Marker: "ghost@example.com"},
	)
	res, err = Check(ctx, pool, js, "S", writes)
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(res.Problems, "\n")
	for _, want := range []string{
		"acked patch_todo of " + todo.String() + " v3 has no outbox event",
		todo.String() + ": acked v3, PostgreSQL has older v2",
		`failed write "leaked" left an outbox event`,
		`failed write "ghost@example.com" left an outbox event`,
		"event " + leaked.ID.String() + " is in the stream 0 times",
		"stream message " + stray + " (1 times) has no outbox row",
		gone.String() + ": a failed delete deleted it",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("problems lack %q; got:\n%s", want, all)
		}
	}
	if len(res.Problems) != 7 {
		t.Errorf("%d problems, want 7:\n%s", len(res.Problems), all)
	}

	// A deleted user's erasure removes every message of their aggregates but each
	// one's newest: those may be missing, the tombstones may not.
	gina, ginaTodo := uuid.New(), uuid.New()
	ginaEvents := []event.Envelope{
		mk(gina, event.UserCreated, gina, 1, event.UserData{ID: gina, Email: "gina@example.com", DisplayName: "g", Version: 1, CreatedAt: now, UpdatedAt: now}),
		mk(gina, event.TodoCreated, ginaTodo, 1, event.TodoData{ID: ginaTodo, UserID: gina, Title: "gina's", Priority: "low", Version: 1, CreatedAt: now, UpdatedAt: now}),
		mk(gina, event.TodoDeleted, ginaTodo, 2, event.TodoData{ID: ginaTodo, UserID: gina, Version: 2}),
		mk(gina, event.UserDeleted, gina, 2, event.UserData{ID: gina, Version: 2}),
	}
	writeOutbox(ctx, t, pool, ginaEvents...)
	s, err := js.Stream(ctx, "S")
	if err != nil {
		t.Fatal(err)
	}
	seqs := map[uuid.UUID]uint64{}
	for _, e := range ginaEvents {
		seqs[e.ID] = publish(e, e.ID.String())
		published(e)
	}
	for _, e := range ginaEvents[:2] { // the user's and the todo's creation
		if err := s.SecureDeleteMsg(ctx, seqs[e.ID]); err != nil {
			t.Fatal(err)
		}
	}
	if res, err = Check(ctx, pool, js, "S", writes); err != nil {
		t.Fatal(err)
	}
	if len(res.Problems) != 7 {
		t.Errorf("an erased user's older events were counted missing: %d problems, want 7:\n%s", len(res.Problems), strings.Join(res.Problems, "\n"))
	}
	if err := s.SecureDeleteMsg(ctx, seqs[ginaEvents[2].ID]); err != nil { // a tombstone
		t.Fatal(err)
	}
	if res, err = Check(ctx, pool, js, "S", writes); err != nil {
		t.Fatal(err)
	}
	// Reported, and with it the todo's erased creation: nothing left in the stream
	// names that todo's owner.
	all = strings.Join(res.Problems, "\n")
	for _, e := range ginaEvents[1:3] {
		if want := "event " + e.ID.String() + " is in the stream 0 times"; !strings.Contains(all, want) {
			t.Errorf("a missing tombstone: problems lack %q:\n%s", want, all)
		}
	}
	if len(res.Problems) != 9 {
		t.Errorf("a missing tombstone: %d problems, want 9:\n%s", len(res.Problems), all)
	}
}

// writeOutbox copies the outbox rows of events in, in the outbox's row format, as the
// API's writes leave them.
func writeOutbox(ctx context.Context, t *testing.T, pool *pgxpool.Pool, events ...event.Envelope) {
	t.Helper()
	if err := sharedtest.WriteOutbox(ctx, pool, events...); err != nil {
		t.Fatal(err)
	}
}
