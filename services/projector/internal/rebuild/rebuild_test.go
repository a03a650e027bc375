package rebuild_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"golang.org/x/sync/errgroup"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/projtest"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/rebuild"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
	"github.com/outboxtodo/outboxtodo/shared/readmodel/ferretindex"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
	"github.com/outboxtodo/outboxtodo/tools/devstack/ferret"
)

// rebuildFrom rebuilds a read model from env's stream as cfg says, and fails t if the
// rebuild fails.
func rebuildFrom(t testing.TB, ctx context.Context, env *projtest.Env, cfg rebuild.Config) rebuild.Result {
	t.Helper()
	res, err := rebuild.Run(ctx, cfg, env.JS, env.Store, env.Log)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// A rebuild fills a fresh read model equal to the source from the stream alone, flips
// readers to it while the live projector runs, and the live projector follows.
func TestRebuildFillsFreshReadModelAndSwitches(t *testing.T) {
	t.Parallel()
	env := projtest.New(t)
	ctx := sharedtest.Context(t, 2*time.Minute)

	w := projtest.NewWorld(t)
	for i := range 4 {
		u := w.CreateUser()
		for j := range 3 {
			td := w.CreateTodo(u, "t")
			if (i+j)%2 == 0 {
				w.SetCompleted(td, true)
			}
		}
	}
	w.DeleteUser(w.CreateUser())
	env.Publish(t, w.Events...)
	live := env.ConsumerConfig("projector")
	env.Start(t, live)

	res := rebuildFrom(t, ctx, env, rebuild.Config{Consumer: live, Database: "todo_read_rebuilt", Settle: time.Second, Timeout: time.Minute})
	if res.Previous != env.Control || res.Events != uint64(len(w.Events)) {
		t.Fatalf("result = %+v, want from %s with %d events", res, env.Control, len(w.Events))
	}
	t.Logf("rebuild: %d messages of %d events in %s (%.0f messages/s)", res.Messages, res.Events, res.CatchUp, res.MessagesPerSecond)
	if name, err := env.Store.ActiveName(ctx); err != nil || name != "todo_read_rebuilt" {
		t.Fatalf("active = %q, %v", name, err)
	}
	if _, err := env.JS.Consumer(ctx, env.Stream, "rebuild-todo_read_rebuilt"); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("rebuild consumer left behind: %v", err)
	}

	// Writes after the switch reach the new read model through the live projector.
	w.SetCompleted(w.CreateTodo(w.CreateUser(), "after"), true)
	env.Publish(t, w.Events[len(w.Events)-3:]...)
	active := env.Mongo.Database("todo_read_rebuilt")
	sharedtest.Eventually(t, 60*time.Second, func() (bool, string) {
		diffs, err := projtest.Differences(ctx, w, active)
		if err != nil {
			return false, err.Error()
		}
		if len(diffs) > 0 {
			return false, diffs[0].String()
		}
		return true, ""
	})
}

// A rebuild reads only the newest message of each aggregate's subject and still ends
// equal to the source: the stream holds several versions of most aggregates, deleted
// todos and deleted users, and the rebuild consumer gets one message per subject. The
// fresh database gets FerretDB's GIN indexes before the first write, and FerretDB's
// lookups there use them.
func TestRebuildReadsNewestMessagePerSubject(t *testing.T) {
	t.Parallel()
	env := projtest.New(t)
	ctx := sharedtest.Context(t, 2*time.Minute)

	w := projtest.NewWorld(t)
	var users []uuid.UUID
	for i := range 12 {
		u := w.CreateUser()
		users = append(users, u)
		w.RenameUser(u, fmt.Sprintf("renamed %d", i))
		for j := range 5 {
			td := w.CreateTodo(u, "t")
			w.SetCompleted(td, true)
			w.SetCompleted(td, false)
			switch {
			case j == 0:
				w.DeleteTodo(td)
			case (i+j)%2 == 0:
				w.SetCompleted(td, true)
			}
		}
	}
	for _, u := range users[:3] {
		w.DeleteUser(u)
	}
	env.Publish(t, w.Events...)
	subjects := map[string]bool{}
	for _, e := range w.Events {
		subjects[e.AggregateType+"/"+e.AggregateID.String()] = true
	}
	if len(w.Events) < 3*len(subjects) {
		t.Fatalf("world: %d events on %d subjects, want several per subject", len(w.Events), len(subjects))
	}

	const target = "todo_read_newest"
	res := rebuildFrom(t, ctx, env, rebuild.Config{Consumer: env.ConsumerConfig("projector"), BatchSize: 25, Database: target,
		FerretDBPostgreSQLURL: env.Ferret.PostgreSQLURL(), Settle: 100 * time.Millisecond, Timeout: time.Minute})
	t.Logf("rebuild: %d messages of %d events on %d subjects in %s", res.Messages, res.Events, len(subjects), res.CatchUp)
	if res.Events != uint64(len(w.Events)) {
		t.Errorf("rebuild reached stream sequence %d, want %d", res.Events, len(w.Events))
	}
	// One per subject, give or take a redelivery; the whole history would be len(w.Events).
	if res.Messages < uint64(len(subjects)) || res.Messages > uint64(len(subjects)+len(subjects)/10) {
		t.Errorf("rebuild consumer got %d messages, want about one per subject (%d) of the stream's %d", res.Messages, len(subjects), len(w.Events))
	}
	rebuilt := env.Mongo.Database(target)
	diffs, err := projtest.Differences(ctx, w, rebuilt)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range diffs {
		t.Errorf("verify: %s", d)
	}

	gin := env.Ferret.GINIndexes(t)
	for _, f := range ferretindex.ReadModelFields {
		if gin[target+"."+f.Collection+"."+f.Field] == "" {
			t.Errorf("no GIN index on %s.%s.%s after the rebuild; GIN indexes: %v", target, f.Collection, f.Field, gin)
		}
	}
	var todo uuid.UUID
	for id := range w.Todos {
		todo = id
		break
	}
	plan := ferret.ExplainFind(t, rebuilt, readmodel.CollTodos, bson.D{{Key: "_id", Value: todo.String()}})
	if index := gin[target+".todos._id"]; !strings.Contains(plan, `"Bitmap Index Scan"`) || !strings.Contains(plan, `"`+index+`"`) {
		t.Errorf("lookup by _id in the rebuilt todos: want a Bitmap Index Scan on %s, got %s", index, plan)
	}
}

// Messages too large to arrive within the consumer's short pulls: nats-server drops a
// message of the last-per-subject snapshot whenever the pull it was taken for has
// expired (see consumer.Config.DeliverPolicy), and the rebuild must not lose it.
func TestRebuildKeepsEveryAggregateWhenPullsExpire(t *testing.T) {
	t.Parallel()
	env := projtest.New(t)
	ctx := sharedtest.Context(t, 3*time.Minute)
	w := projtest.NewWorld(t)
	title := strings.Repeat("a long title ", 700) // about 9 kB, and the notes repeat it
	for range 40 {
		u := w.CreateUser()
		for range 25 {
			w.CreateTodo(u, title)
		}
	}
	env.Publish(t, w.Events...)

	const target = "todo_read_large"
	cc := env.ConsumerConfig("projector")
	cc.WriteTimeout = 30 * time.Second // batches of 5 MB, on a machine that may be busy
	res := rebuildFrom(t, ctx, env, rebuild.Config{Consumer: cc, BatchSize: 500, Database: target,
		Settle: 100 * time.Millisecond, Timeout: 2 * time.Minute})
	diffs, err := projtest.Differences(ctx, w, env.Mongo.Database(target))
	if err != nil {
		t.Fatal(err)
	}
	if len(diffs) > 0 {
		t.Errorf("rebuild of %d events (%d messages delivered) differs from the source in %d documents, first %s", res.Events, res.Messages, len(diffs), diffs[0])
	}
}

// BenchmarkRebuild rebuilds 100,000 aggregates (10,000 users of 9 todos, a third of the
// todos in a second version) from the stream into FerretDB, and measures in the same
// run, before and after it, the server's raw ceiling for the same documents, unordered
// insertMany into a fresh database with the same indexes, two ways: in batches of the
// rebuild's batch size one at a time, and in chunks of 100 with as many in flight as the
// rebuild's write concurrency. Report the ratio to the best ceiling, never assert it
// (the machine's other load moves every figure):
//
//	cd services/projector && go test -run '^$' -bench Rebuild -benchtime 1x ./internal/rebuild/
func BenchmarkRebuild(b *testing.B) {
	const users, todosPerUser = 10000, 9
	env := projtest.New(b)
	ctx := sharedtest.Context(b, 20*time.Minute)
	w := projtest.NewWorld(b)
	for range users {
		u := w.CreateUser()
		for j := range todosPerUser {
			td := w.CreateTodo(u, "a todo of average length")
			if j%3 == 0 {
				w.SetCompleted(td, true)
			}
		}
	}
	env.Publish(b, w.Events...)
	// What the rebuild reads is in the stream now; the test's own copy would only
	// weigh on the garbage collector of this process, which hosts the servers too.
	w.Events = nil
	aggregates := float64(users * (1 + todosPerUser))
	snap := w.Snapshot()
	docs := map[string][]any{}
	for _, u := range snap.Users {
		docs[readmodel.CollUsers] = append(docs[readmodel.CollUsers], u)
	}
	for _, td := range snap.Todos {
		docs[readmodel.CollTodos] = append(docs[readmodel.CollTodos], td)
	}
	cc := env.ConsumerConfig("projector")
	ceiling := func(name string, chunk, inFlight int) float64 {
		db := env.Database(b, name)
		var g errgroup.Group
		g.SetLimit(inFlight)
		start := time.Now()
		for coll, ds := range docs {
			for batch := range slices.Chunk(ds, chunk) {
				g.Go(func() error {
					_, err := db.Collection(coll).InsertMany(ctx, batch, options.InsertMany().SetOrdered(false))
					return err
				})
			}
		}
		if err := g.Wait(); err != nil {
			b.Fatal(err)
		}
		return aggregates / time.Since(start).Seconds()
	}
	ceilings := func(when string, i int) (best float64) {
		for _, c := range []struct {
			name            string
			chunk, inFlight int
		}{{"one-batch", rebuild.DefaultBatchSize, 1}, {"concurrent", 100, cc.Concurrency}} {
			rate := ceiling(fmt.Sprintf("ceiling_%s_%s_%d", when, c.name, i), c.chunk, c.inFlight)
			b.ReportMetric(rate, "raw-"+c.name+"-"+when+"-docs/s")
			best = max(best, rate)
		}
		return best
	}

	for i := 0; b.Loop(); i++ {
		before := ceilings("before", i)
		res := rebuildFrom(b, ctx, env, rebuild.Config{Consumer: cc, Database: fmt.Sprintf("rebuilt_%d", i),
			FerretDBPostgreSQLURL: env.Ferret.PostgreSQLURL(), Settle: 100 * time.Millisecond, Timeout: 15 * time.Minute})
		after := ceilings("after", i)
		if res.Messages < uint64(aggregates) {
			b.Errorf("rebuild got %d messages for %.0f aggregates", res.Messages, aggregates)
		}
		rate := aggregates / res.CatchUp.Seconds()
		b.ReportMetric(rate, "aggregates/s")
		b.ReportMetric(rate/max(before, after), "ratio-to-best")
		b.Logf("rebuild: %d messages of %d events in %s", res.Messages, res.Events, res.CatchUp.Round(time.Millisecond))
	}
}
