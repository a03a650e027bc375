package erasure_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/erasure"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/projtest"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/rebuild"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

// projected starts the servers and one projector replica on w's events, and returns
// once the read model equals w.
func projected(t *testing.T, w *projtest.World) *projtest.Env {
	t.Helper()
	env := projtest.New(t)
	env.Publish(t, w.Events...)
	env.StartMember(t, env.GroupConfig("projector", "a"))
	sharedtest.Eventually(t, time.Minute, env.Converged(w))
	return env
}

// startEraser runs the projector's eraser (durable projector-erasure, retrying after
// 100 ms) until the test ends.
func startEraser(t *testing.T, env *projtest.Env) {
	t.Helper()
	e := erasure.New(erasure.Config{Stream: env.Stream, SubjectPrefix: projtest.Prefix, Durable: "projector-erasure", Retry: 100 * time.Millisecond},
		env.JS, env.Store, env.Log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// find names where the stream or a collection of the read model's databases holds
// any of the needles, or returns "".
func find(t *testing.T, env *projtest.Env, needles ...[]byte) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	holds := func(b []byte) bool {
		for _, n := range needles {
			if bytes.Contains(b, n) {
				return true
			}
		}
		return false
	}
	st, err := env.JS.Stream(ctx, env.Stream)
	if err != nil {
		t.Fatal(err)
	}
	state := st.CachedInfo().State
	for seq := state.FirstSeq; seq <= state.LastSeq && seq > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if holds(m.Data) {
			return fmt.Sprintf("stream message %d (%s)", seq, m.Subject)
		}
	}
	active, err := env.Store.Active(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, db := range []*mongo.Database{active, env.Store.Control()} {
		names, err := db.ListCollectionNames(ctx, bson.D{})
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range names {
			cur, err := db.Collection(name).Find(ctx, bson.D{})
			if err != nil {
				t.Fatal(err)
			}
			var docs []bson.Raw
			if err := cur.All(ctx, &docs); err != nil {
				t.Fatal(err)
			}
			for _, d := range docs {
				if holds(d) {
					return fmt.Sprintf("%s.%s document %s", db.Name(), name, d.Lookup("_id"))
				}
			}
		}
	}
	return ""
}

// Once a user's deletion is applied, no message of the stream and no document of the
// read model (dead letters included) holds their email or display name; another
// user's data stays; each of the user's subjects keeps its tombstone, so a rebuild from
// the stream still equals the source of truth. An old user.created that reaches the
// stream after the deletion is skipped by the projector and erased too.
func TestErasureAfterTheDeletionIsApplied(t *testing.T) {
	t.Parallel()
	w := projtest.NewWorld(t)
	gone, kept := w.CreateUser(), w.CreateUser()
	created := w.Events[0]
	w.RenameUser(gone, "Secret Name")
	a := w.CreateTodo(gone, "secret todo")
	w.SetCompleted(a, true)
	w.CreateTodo(gone, "another")
	w.CreateTodo(kept, "kept todo")
	email, keptEmail := w.Users[gone].Email, w.Users[kept].Email
	env := projected(t, w)
	ctx := sharedtest.Context(t, 3*time.Minute)

	body, err := created.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.Store.Control().Collection(readmodel.CollDeadLetters).InsertOne(ctx, readmodel.DeadLetter{ID: env.Stream + ":999999",
		Stream: env.Stream, StreamSeq: 999999, Subject: fmt.Sprintf("%d.%s", event.PartitionOf(gone, projtest.Partitions), event.Subject(projtest.Prefix, created)),
		Data: body, Error: "planted", DeadAt: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}

	// The eraser runs before the deletion is applied: it waits for it.
	startEraser(t, env)
	n := len(w.Events)
	w.DeleteUser(gone)
	env.Publish(t, w.Events[n:]...)
	sharedtest.Eventually(t, time.Minute, env.Converged(w))
	env.PublishRedelivery(t, created)

	sharedtest.Eventually(t, time.Minute, func() (bool, string) {
		if where := find(t, env, []byte(email), []byte("Secret Name"), []byte("secret todo")); where != "" {
			return false, "personal data still in " + where
		}
		return true, ""
	})
	if where := find(t, env, []byte(keptEmail)); where == "" {
		t.Fatal("the other user's email is gone too")
	}
	st, err := env.JS.Stream(ctx, env.Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter("*."+event.OwnerFilter(projtest.Prefix, gone)))
	if err != nil {
		t.Fatal(err)
	}
	if len(info.State.Subjects) != 3 {
		t.Fatalf("subjects of the deleted user = %v, want the user's and two todos'", info.State.Subjects)
	}
	for subject, count := range info.State.Subjects {
		m, err := st.GetLastMsgForSubject(ctx, subject)
		if err != nil {
			t.Fatal(err)
		}
		e, err := event.Decode(m.Data)
		if count != 1 || err != nil || !event.IsDelete(e.Type) {
			t.Fatalf("%s holds %d messages, the last %s (%v); want its tombstone alone", subject, count, e.Type, err)
		}
	}

	const target = "todo_read_rebuilt"
	if _, err := rebuild.Run(ctx, rebuild.Config{Consumer: env.ConsumerConfig("projector"), Database: target, FerretDBPostgreSQLURL: env.Ferret.PostgreSQLURL(),
		Settle: 100 * time.Millisecond, Timeout: time.Minute}, env.JS, env.Store, env.Log); err != nil {
		t.Fatal(err)
	}
	diffs, err := projtest.Differences(ctx, w, env.Mongo.Database(target))
	if err != nil || len(diffs) > 0 {
		t.Fatalf("rebuilt read model differs from the source: %v, %v", diffs, err)
	}
}

// The same user deleted and erased, with a second eraser racing the first (two
// projector replicas): both finish, and the erasure of a subject already erased is a
// no-op.
func TestErasureIsIdempotent(t *testing.T) {
	t.Parallel()
	w := projtest.NewWorld(t)
	u := w.CreateUser()
	for i := range 5 {
		w.RenameUser(u, fmt.Sprintf("name %d", i))
	}
	w.CreateTodo(u, "t")
	w.DeleteUser(u)
	env := projected(t, w)
	ctx := sharedtest.Context(t, 2*time.Minute)

	e := erasure.New(erasure.Config{Stream: env.Stream, SubjectPrefix: projtest.Prefix, Durable: "eraser"}, env.JS, env.Store, env.Log)
	version := w.Events[len(w.Events)-1].Version
	var wg sync.WaitGroup
	reps := make([]erasure.Report, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Go(func() { reps[i], errs[i] = e.Erase(ctx, u, version) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	// 1 user.created + 5 user.updated, and the todo's todo.created.
	if got := reps[0].Messages + reps[1].Messages; got < 7 {
		t.Fatalf("erased %d messages in all, want at least 7 (%+v)", got, reps)
	}
	again, err := e.Erase(ctx, u, version)
	if err != nil || again.Messages != 0 || again.Subjects != 2 {
		t.Fatalf("erasing again = %+v, %v; want nothing erased on 2 subjects", again, err)
	}
	if _, err := e.Erase(ctx, u, version+1); !errors.Is(err, erasure.ErrNotApplied) {
		t.Fatalf("erasing a deletion the read model has not applied: %v, want ErrNotApplied", err)
	}
}

// An operator deleting the eraser's consumer (or the stream being recreated) stops its
// iterator: the eraser creates the consumer again and erases what comes next.
func TestErasureSurvivesItsConsumerDeleted(t *testing.T) {
	t.Parallel()
	w := projtest.NewWorld(t)
	u := w.CreateUser()
	w.RenameUser(u, "Secret Name")
	env := projected(t, w)
	ctx := sharedtest.Context(t, 2*time.Minute)
	startEraser(t, env)
	sharedtest.Eventually(t, time.Minute, func() (bool, string) {
		_, err := env.JS.Consumer(ctx, env.Stream, "projector-erasure")
		return err == nil, fmt.Sprint(err)
	})
	if err := env.JS.DeleteConsumer(ctx, env.Stream, "projector-erasure"); err != nil {
		t.Fatal(err)
	}
	n := len(w.Events)
	w.DeleteUser(u)
	env.Publish(t, w.Events[n:]...)
	sharedtest.Eventually(t, time.Minute, func() (bool, string) {
		if where := find(t, env, []byte("Secret Name")); where != "" {
			return false, "personal data still in " + where
		}
		return true, ""
	})
}
