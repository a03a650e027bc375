package project_test

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/project"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/projtest"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/verify"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
)

func apply(t *testing.T, p *project.Projector, events ...event.Envelope) []project.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res := p.Apply(ctx, events)
	for i, r := range res {
		if r.Err != nil {
			t.Fatalf("apply %s v%d: %v", events[i].Type, events[i].Version, r.Err)
		}
	}
	return res
}

func outcomes(res []project.Result) []project.Outcome {
	out := make([]project.Outcome, len(res))
	for i, r := range res {
		out[i] = r.Outcome
	}
	return out
}

func requireConverged(t *testing.T, env *projtest.Env, db string, w *projtest.World) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got, err := verify.FromMongo(ctx, env.Mongo.Database(db))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range verify.Compare(w.Snapshot(), got) {
		t.Error(d)
	}
}

// The guard cases share one FerretDB; each uses a database of its own.
func TestGuards(t *testing.T) {
	t.Parallel()
	env := projtest.New(t)

	t.Run("redelivery applies once", func(t *testing.T) {
		t.Parallel()
		p := project.New(env.Mongo.Database("redelivery"), 4)
		w := projtest.NewWorld(t)
		u := w.CreateUser()
		td := w.CreateTodo(u, "a")
		w.SetCompleted(td, true)
		first := apply(t, p, w.Events...)
		again := apply(t, p, w.Events...)
		for i := range w.Events {
			if first[i].Outcome != project.Applied || again[i].Outcome != project.Stale {
				t.Fatalf("event %d: first %v then %v, want applied then stale", i, first[i].Outcome, again[i].Outcome)
			}
		}
		requireConverged(t, env, "redelivery", w)
	})

	t.Run("v3 before v2 leaves v3", func(t *testing.T) {
		t.Parallel()
		p := project.New(env.Mongo.Database("reorder"), 4)
		w := projtest.NewWorld(t)
		u := w.CreateUser()
		td := w.CreateTodo(u, "a")
		w.SetCompleted(td, true)  // v2
		w.SetCompleted(td, false) // v3
		ev := w.Events
		// One batch keeps stream order per aggregate, so deliver v3 and v2 in two.
		apply(t, p, ev[0], ev[1], ev[3])
		if got := outcomes(apply(t, p, ev[2])); got[0] != project.Stale {
			t.Fatalf("v2 after v3: %v, want stale", got[0])
		}
		requireConverged(t, env, "reorder", w)
	})

	t.Run("delete then late older upsert does not resurrect", func(t *testing.T) {
		t.Parallel()
		db := env.Mongo.Database("resurrect")
		p := project.New(db, 4)
		w := projtest.NewWorld(t)
		u := w.CreateUser()
		keep := w.CreateTodo(u, "keep")
		gone := w.CreateTodo(u, "gone")
		w.SetCompleted(gone, true)
		w.DeleteTodo(gone)
		ev := w.Events // user, keep v1, gone v1, gone v2, gone deleted v3
		apply(t, p, ev[0], ev[1], ev[4])
		if got := outcomes(apply(t, p, ev[2], ev[3])); got[0] != project.Stale || got[1] != project.Stale {
			t.Fatalf("late upserts after the delete: %v, want stale", got)
		}
		requireConverged(t, env, "resurrect", w)
		var tomb readmodel.Todo
		ctx := context.Background()
		if err := db.Collection(readmodel.CollTodos).FindOne(ctx, bson.D{{Key: "_id", Value: gone.String()}}).Decode(&tomb); err != nil {
			t.Fatalf("tombstone: %v", err)
		}
		if !tomb.Deleted || tomb.Version != 3 || tomb.Title != "" {
			t.Fatalf("tombstone = %+v, want deleted v3 without data", tomb)
		}
		st, err := readmodel.NewStore(env.Mongo, "resurrect").Stats(ctx, u.String())
		if err != nil {
			t.Fatal(err)
		}
		if st.Total != 1 || st.Open != 1 || st.Completed != 0 {
			t.Fatalf("stats = %+v, want the kept todo only", st)
		}
		var kept readmodel.Todo
		if err := db.Collection(readmodel.CollTodos).FindOne(ctx, bson.D{{Key: "_id", Value: keep.String()}, readmodel.NotDeleted}).Decode(&kept); err != nil || kept.Title != "keep" {
			t.Fatalf("kept todo = %+v, %v", kept, err)
		}
	})

	t.Run("deleted user leaves no visible documents", func(t *testing.T) {
		t.Parallel()
		p := project.New(env.Mongo.Database("deluser"), 4)
		w := projtest.NewWorld(t)
		u := w.CreateUser()
		other := w.CreateUser()
		w.SetCompleted(w.CreateTodo(u, "a"), true)
		w.CreateTodo(other, "b")
		w.DeleteUser(u)
		apply(t, p, w.Events...)
		requireConverged(t, env, "deluser", w)
		lb, err := readmodel.NewStore(env.Mongo, "deluser").Leaderboard(context.Background(), 10, u.String())
		if err != nil {
			t.Fatal(err)
		}
		if len(lb.Top) != 1 || lb.Top[0].UserID != other.String() || lb.Me != nil {
			t.Fatalf("leaderboard = %+v, want only the other user", lb)
		}
	})
}

// Two appliers race over shuffled, duplicated deliveries of the same events: the
// documents and the stats (hence the leaderboard) end exactly as the source.
func TestStatsExactUnderShuffledDuplicatedConcurrentDelivery(t *testing.T) {
	t.Parallel()
	env := projtest.New(t)
	db := env.Mongo.Database("race")
	w := projtest.NewWorld(t)
	rng := rand.New(rand.NewPCG(1, 2))
	var users []string
	for range 4 {
		u := w.CreateUser()
		users = append(users, u.String())
		for j := range 5 {
			td := w.CreateTodo(u, "t")
			for range rng.IntN(3) {
				w.SetCompleted(td, j%2 == 0 || rng.IntN(2) == 0)
			}
			if rng.IntN(5) == 0 {
				w.DeleteTodo(td)
			}
		}
	}
	deliveries := append(append([]event.Envelope(nil), w.Events...), w.Events...)
	rng.Shuffle(len(deliveries), func(i, j int) { deliveries[i], deliveries[j] = deliveries[j], deliveries[i] })

	var wg sync.WaitGroup
	for r := range 2 {
		wg.Go(func() {
			p := project.New(db, 4)
			for i := r * 7; i < len(deliveries); i += 14 { // replicas take interleaved batches of 7
				batch := deliveries[i:min(i+7, len(deliveries))]
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				for j, res := range p.Apply(ctx, batch) {
					if res.Err != nil {
						t.Errorf("replica %d: apply %s v%d: %v", r, batch[j].Type, batch[j].Version, res.Err)
					}
				}
				cancel()
			}
		})
	}
	wg.Wait()
	requireConverged(t, env, "race", w)

	want := w.Snapshot()
	lb, err := readmodel.NewStore(env.Mongo, "race").Leaderboard(context.Background(), 10, users[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(lb.Top) != len(users) {
		t.Fatalf("leaderboard has %d users, want %d", len(lb.Top), len(users))
	}
	for i, e := range lb.Top {
		if e.Completed != want.Stats[e.UserID].Completed {
			t.Errorf("rank %d %s: completed %d, want %d", e.Rank, e.UserID, e.Completed, want.Stats[e.UserID].Completed)
		}
		if i > 0 {
			prev := lb.Top[i-1]
			if prev.Completed < e.Completed || (prev.Completed == e.Completed && prev.UserID > e.UserID) {
				t.Errorf("rank %d out of order after %+v: %+v", e.Rank, prev, e)
			}
		}
		if e.UserID == users[0] && (lb.Me == nil || lb.Me.Rank != e.Rank) {
			t.Errorf("caller's rank = %+v, want %d", lb.Me, e.Rank)
		}
	}
}
