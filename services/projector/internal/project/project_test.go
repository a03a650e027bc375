package project_test

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.mongodb.org/mongo-driver/v2/bson"
	mevent "go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/project"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/projtest"
	"github.com/outboxtodo/outboxtodo/shared/drift"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

// writePath is one write path, chosen explicitly: the tests run both against FerretDB.
type writePath struct {
	name string
	opts []project.Option
}

var (
	mongoPath  = writePath{"mongodb", []project.Option{project.OnServer(project.MongoDB)}}
	ferretPath = writePath{"ferretdb", []project.Option{project.OnServer(project.FerretDB)}}
	// The rebuild's variants: every document tried as an insert first.
	mongoInsertFirst  = writePath{"mongodb-insert-first", []project.Option{project.OnServer(project.MongoDB), project.InsertFirst()}}
	ferretInsertFirst = writePath{"ferretdb-insert-first", []project.Option{project.OnServer(project.FerretDB), project.InsertFirst()}}
)

func apply(t *testing.T, p *project.Projector, events ...event.Envelope) []project.Result {
	t.Helper()
	ctx := sharedtest.Context(t, 30*time.Second)
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

func last(w *projtest.World) event.Envelope { return w.Events[len(w.Events)-1] }

// find decodes the document id of coll, tombstones included, into out.
func find(t *testing.T, db *mongo.Database, coll string, id uuid.UUID, out any) {
	t.Helper()
	if err := db.Collection(coll).FindOne(context.Background(), bson.D{{Key: "_id", Value: id.String()}}).Decode(out); err != nil {
		t.Fatalf("%s %s: %v", coll, id, err)
	}
}

func requireConverged(t *testing.T, db *mongo.Database, w *projtest.World) {
	t.Helper()
	got, err := drift.FromMongo(sharedtest.Context(t, 30*time.Second), db)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range drift.Compare(w.Snapshot(), got) {
		t.Error(d)
	}
}

// requireLeaderboard checks db's whole leaderboard and the caller's rank against the
// world: every live user, completed counts exact, ordered by completed then user id.
func requireLeaderboard(t *testing.T, db *mongo.Database, w *projtest.World, caller uuid.UUID) {
	t.Helper()
	lb := projtest.Leaderboard(t, db)
	want := slices.SortedFunc(maps.Keys(w.Users), func(a, b uuid.UUID) int {
		if d := w.Stats[b].Completed - w.Stats[a].Completed; d != 0 {
			return int(d)
		}
		return strings.Compare(a.String(), b.String())
	})
	if len(lb) != len(want) {
		t.Fatalf("leaderboard has %d users, want %d: %+v", len(lb), len(want), lb)
	}
	for i, e := range lb {
		st := w.Stats[want[i]]
		if e.UserID != want[i].String() || e.Completed != st.Completed || e.Total != st.Total() ||
			e.DisplayName != w.Users[want[i]].DisplayName {
			t.Errorf("rank %d = %+v, want %s with %d of %d completed", i+1, e, want[i], st.Completed, st.Total())
		}
	}
	rank := slices.Index(want, caller)
	mine := slices.IndexFunc(lb, func(l projtest.LeaderboardLine) bool { return l.UserID == caller.String() })
	switch {
	case rank < 0 && mine >= 0:
		t.Errorf("caller %s is not a live user but ranks %+v", caller, lb[mine])
	case rank >= 0 && mine != rank:
		t.Errorf("caller's line is rank %d, want rank %d", mine+1, rank+1)
	}
}

func TestDetectServer(t *testing.T) {
	t.Parallel()
	env := projtest.New(t)
	ctx := sharedtest.Context(t, 10*time.Second)
	got, err := project.DetectServer(ctx, env.Mongo)
	if err != nil || got != project.FerretDB {
		t.Fatalf("DetectServer = %v, %v; want ferretdb", got, err)
	}
}

// The guard cases, on both paths. Their bulks hold at most one stale write: FerretDB's
// BulkWrite stops at the first error of a bulk and misreports which one it was (see
// the package doc), so the MongoDB path is exact here only within that limit.
func TestGuards(t *testing.T) {
	t.Parallel()
	env := projtest.New(t)
	for _, path := range []writePath{mongoPath, ferretPath} {
		t.Run(path.name, func(t *testing.T) {
			t.Parallel()
			// newDB is a case's own database, its projector and an empty world.
			newDB := func(t *testing.T, name string) (*mongo.Database, *project.Projector, *projtest.World) {
				db := env.Database(t, path.name+"_"+name)
				return db, project.New(db, 4, path.opts...), projtest.NewWorld(t)
			}

			t.Run("redelivery applies once", func(t *testing.T) {
				t.Parallel()
				db, p, w := newDB(t, "redelivery")
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
				requireConverged(t, db, w)
			})

			t.Run("v3 before v2 leaves v3", func(t *testing.T) {
				t.Parallel()
				db, p, w := newDB(t, "reorder")
				u := w.CreateUser()
				td := w.CreateTodo(u, "a")
				w.SetCompleted(td, true)  // v2
				w.SetCompleted(td, false) // v3
				ev := w.Events
				// One batch writes the newest version it holds, so deliver v3 and v2 in two.
				apply(t, p, ev[0], ev[1], ev[3])
				if got := outcomes(apply(t, p, ev[2])); got[0] != project.Stale {
					t.Fatalf("v2 after v3: %v, want stale", got[0])
				}
				requireConverged(t, db, w)
			})

			t.Run("delete then late older upsert does not resurrect", func(t *testing.T) {
				t.Parallel()
				db, p, w := newDB(t, "resurrect")
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
				requireConverged(t, db, w)
				var tomb readmodel.Todo
				find(t, db, readmodel.CollTodos, gone, &tomb)
				if !tomb.Deleted || tomb.Version != 3 || tomb.Title != "" {
					t.Fatalf("tombstone = %+v, want deleted v3 without data", tomb)
				}
				var st readmodel.Stats
				if find(t, db, readmodel.CollStats, u, &st); st.Deleted || st.Total != 1 || st.Open != 1 || st.Completed != 0 || st.Version != w.Stats[u].Version {
					t.Fatalf("stats = %+v, want the kept todo only, at version %d", st, w.Stats[u].Version)
				}
				var kept readmodel.Todo
				if err := db.Collection(readmodel.CollTodos).FindOne(context.Background(), bson.D{{Key: "_id", Value: keep.String()}, readmodel.NotDeleted}).Decode(&kept); err != nil || kept.Title != "keep" {
					t.Fatalf("kept todo = %+v, %v", kept, err)
				}
			})

			t.Run("deleted user leaves no visible documents", func(t *testing.T) {
				t.Parallel()
				db, p, w := newDB(t, "deluser")
				u := w.CreateUser()
				other := w.CreateUser()
				w.SetCompleted(w.CreateTodo(u, "a"), true)
				w.CreateTodo(other, "b")
				w.DeleteUser(u)
				apply(t, p, w.Events...)
				requireConverged(t, db, w)
				requireLeaderboard(t, db, w, u)
				var st readmodel.Stats
				if find(t, db, readmodel.CollStats, u, &st); !st.Deleted || st.Total != 0 || st.Version != w.Stats[u].Version {
					t.Fatalf("deleted user's stats = %+v; want the deleted snapshot", st)
				}
			})

			t.Run("one batch writes each document once", func(t *testing.T) {
				t.Parallel()
				client, count := monitored(t, env)
				db := env.Database(t, path.name+"_coalesce")
				p := project.New(client.Database(db.Name()), 4, path.opts...)
				w := projtest.NewWorld(t)
				u := w.CreateUser()
				td := w.CreateTodo(u, "a")
				w.SetCompleted(td, true)
				w.SetCompleted(td, false)
				w.RenameUser(u, "Ada")
				apply(t, p, w.Events[:1]...) // the user and its first stats
				count.reset()
				res := apply(t, p, w.Events[1:]...)
				// The todo at v3 and the user at v2, each in one write, and the stats at their
				// newest version in one more.
				if n := count.total(db.Name()); n != 3 {
					t.Errorf("%d commands for a batch of 4 events on 3 documents, want 3: %v", n, count.byName(db.Name()))
				}
				for i, r := range res {
					if r.Outcome != project.Applied {
						t.Errorf("event %d: %v, want applied (by the write of its document's newest version)", i+1, r.Outcome)
					}
				}
				requireConverged(t, db, w)
			})

			t.Run("a deleted snapshot wins a tie of versions", func(t *testing.T) {
				t.Parallel()
				for i, deletedFirst := range []bool{true, false} {
					db, p, w := newDB(t, fmt.Sprintf("tie%d", i))
					u := w.CreateUser()
					w.CreateTodo(u, "a")
					live := last(w)
					w.DeleteUser(u)
					deleted := last(w)
					// The same stats version, once live and once deleted: the deleted one is
					// kept, wherever it is in the batch.
					live.Stats = &event.Stats{Open: 1, Version: deleted.Stats.Version}
					batch := []event.Envelope{live, deleted}
					if deletedFirst {
						batch = []event.Envelope{deleted, live}
					}
					apply(t, p, batch...)
					var st readmodel.Stats
					if find(t, db, readmodel.CollStats, u, &st); !st.Deleted || st.Open != 0 {
						t.Fatalf("deleted first %t: stats = %+v; want the deleted snapshot", deletedFirst, st)
					}
				}
			})

			t.Run("stats of older releases", func(t *testing.T) {
				t.Parallel()
				db, p, w := newDB(t, "upgrade")
				u := w.CreateUser()
				created := last(w)
				// A stats document as the recounting release wrote it: source_version, no
				// version, deleted left out.
				old := bson.D{{Key: "_id", Value: u.String()}, {Key: "open", Value: 3}, {Key: "completed", Value: 4}, {Key: "total", Value: 7},
					{Key: "source_version", Value: 40}, {Key: "updated_at", Value: time.Now()}}
				if _, err := db.Collection(readmodel.CollStats).InsertOne(context.Background(), old); err != nil {
					t.Fatal(err)
				}
				// An event written before events carried stats leaves them alone.
				w.RenameUser(u, "Ada")
				unversioned := last(w)
				unversioned.Stats = nil
				withoutStats := created
				withoutStats.Stats = nil
				apply(t, p, withoutStats, unversioned)
				var raw bson.M
				if find(t, db, readmodel.CollStats, u, &raw); raw["source_version"] == nil {
					t.Fatalf("stats after events without stats = %v; want the old document", raw)
				}
				// The first snapshot (version 1) replaces the old document.
				apply(t, p, created)
				raw = nil
				find(t, db, readmodel.CollStats, u, &raw)
				if _, ok := raw["source_version"]; ok || raw["deleted"] != false || raw["version"] != int64(1) || raw["total"] != int64(0) {
					t.Fatalf("stats after the first snapshot = %v; want version 1, deleted false, no source_version", raw)
				}
				requireConverged(t, db, w)
				requireLeaderboard(t, db, w, u)
			})
		})
	}
}

// Two appliers race on a document that does not exist yet: both upserts miss the
// filter and one loses the insert with E11000 whatever its version. The higher version
// must win every time, on both paths. Odd rounds race the creation (FerretDB's insert)
// against the next version (an upsert).
func TestRaceOnMissingDocumentHigherVersionWins(t *testing.T) {
	t.Parallel()
	env := projtest.New(t)
	for _, path := range []writePath{mongoPath, ferretPath} {
		t.Run(path.name, func(t *testing.T) {
			t.Parallel()
			db := env.Database(t, path.name+"_race")
			ctx := sharedtest.Context(t, 2*time.Minute)
			w := projtest.NewWorld(t)
			for round := range 40 {
				u := w.CreateUser()
				td := w.CreateTodo(u, "t")
				w.SetCompleted(td, true)
				w.SetCompleted(td, false)
				ev := w.Events[len(w.Events)-3:] // v1, v2, v3 of the todo
				lower, higher := ev[1], ev[2]
				if round%2 == 1 {
					lower, higher = ev[0], ev[1]
				}
				var (
					wg      sync.WaitGroup
					start   = make(chan struct{})
					results [2]project.Result
				)
				for i, e := range []event.Envelope{lower, higher} {
					wg.Go(func() {
						<-start
						results[i] = project.New(db, 2, path.opts...).Apply(ctx, []event.Envelope{e})[0]
					})
				}
				close(start)
				wg.Wait()
				if results[0].Err != nil || results[1].Err != nil {
					t.Fatalf("round %d: %v, %v", round, results[0].Err, results[1].Err)
				}
				if results[1].Outcome != project.Applied {
					t.Errorf("round %d: v%d answered %v, want applied", round, higher.Version, results[1].Outcome)
				}
				var (
					doc readmodel.Todo
					st  readmodel.Stats
				)
				find(t, db, readmodel.CollTodos, td, &doc)
				find(t, db, readmodel.CollStats, u, &st)
				if doc.Version != higher.Version || st.Version != higher.Stats.Version {
					t.Errorf("round %d: todo v%d and stats v%d won, want v%d and v%d", round, doc.Version, st.Version, higher.Version, higher.Stats.Version)
				}
			}
		})
	}
}

// mixedWorld is a few users with todos completed, reopened, deleted and renamed, and
// one user deleted with their todos.
func mixedWorld(t *testing.T, seed uint64) (*projtest.World, []uuid.UUID) {
	w := projtest.NewWorld(t)
	rng := rand.New(rand.NewPCG(seed, 2))
	var users []uuid.UUID
	for i := range 6 {
		u := w.CreateUser()
		users = append(users, u)
		for j := range 4 + i {
			td := w.CreateTodo(u, fmt.Sprintf("t%d", j))
			for range rng.IntN(3) {
				w.SetCompleted(td, rng.IntN(3) > 0)
			}
			if rng.IntN(5) == 0 {
				w.DeleteTodo(td)
			}
		}
		if i%2 == 0 {
			w.RenameUser(u, fmt.Sprintf("Renamed %d", i))
		}
	}
	w.DeleteUser(users[1])
	return w, users
}

// Shuffled, duplicated deliveries applied by concurrent appliers: documents, stats and
// the leaderboard end exactly as the source.
//
// Appliers run concurrently on the same round of deliveries, each in its own order:
// they race on every document, missing or not, and on duplicates. They never race two
// different versions of one existing document, which FerretDB cannot make safe (its
// filtered update reads, then writes without a condition; see the package doc), and
// that is why the MongoDB path is not run here: FerretDB's BulkWrite misreports bulks
// that hold several stale writes. Rounds follow one another in shuffled order, so a
// round often brings older versions than the last one.
func TestExactUnderShuffledDuplicatedConcurrentDelivery(t *testing.T) {
	t.Parallel()
	env := projtest.New(t)
	for _, path := range []writePath{ferretPath, ferretInsertFirst} {
		t.Run(path.name, func(t *testing.T) {
			t.Parallel()
			db := env.Database(t, path.name+"_shuffled")
			w, users := mixedWorld(t, 1)
			rng := rand.New(rand.NewPCG(3, 4))
			deliveries := slices.Concat(w.Events, w.Events)
			rng.Shuffle(len(deliveries), func(i, j int) { deliveries[i], deliveries[j] = deliveries[j], deliveries[i] })
			for i := 0; i < len(deliveries); i += 12 {
				round := deliveries[i:min(i+12, len(deliveries))]
				var wg sync.WaitGroup
				for r := range 3 {
					batch := slices.Clone(round)
					rand.New(rand.NewPCG(uint64(i), uint64(r))).Shuffle(len(batch), func(i, j int) { batch[i], batch[j] = batch[j], batch[i] })
					wg.Go(func() {
						ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
						defer cancel()
						for j, res := range project.New(db, 4, path.opts...).Apply(ctx, batch) {
							if res.Err != nil {
								t.Errorf("applier %d: apply %s v%d: %v", r, batch[j].Type, batch[j].Version, res.Err)
							}
						}
					})
				}
				wg.Wait()
			}
			requireConverged(t, db, w)
			requireLeaderboard(t, db, w, users[0])
			requireLeaderboard(t, db, w, users[1]) // deleted: no line of their own
		})
	}
}

// Every path applies the same world to the same documents. Batches hold one owner's
// events in stream order (at most 25), so that no bulk holds more than one stale write
// (see TestGuards) and none more than 40 statements, which FerretDB's bulk hangs past.
func TestPathsGiveTheSameDocuments(t *testing.T) {
	t.Parallel()
	env := projtest.New(t)
	w, _ := mixedWorld(t, 5)
	byOwner := map[uuid.UUID][]event.Envelope{}
	var owners []uuid.UUID
	for _, e := range w.Events {
		if _, ok := byOwner[e.OwnerID]; !ok {
			owners = append(owners, e.OwnerID)
		}
		byOwner[e.OwnerID] = append(byOwner[e.OwnerID], e)
	}
	for _, path := range []writePath{mongoPath, ferretPath, mongoInsertFirst, ferretInsertFirst} {
		t.Run(path.name, func(t *testing.T) {
			t.Parallel()
			db := env.Database(t, path.name+"_same")
			p := project.New(db, 4, path.opts...)
			for _, o := range owners {
				for events := range slices.Chunk(byOwner[o], 25) {
					apply(t, p, events...)
				}
			}
			requireConverged(t, db, w)
		})
	}
}

// commands counts the commands a client sends, per database and name, and watches its
// insert commands: their sizes, and how many were in flight at once.
type commands struct {
	mu            sync.Mutex
	n             map[string]map[string]int
	insertSizes   map[string][]int
	inserting     int
	mostInserting int
}

func (c *commands) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n = map[string]map[string]int{}
	c.insertSizes = map[string][]int{}
	c.mostInserting = 0
}

// inserts are the sizes of the insert commands sent to db, sorted, and the most insert
// commands in flight at once, to any database.
func (c *commands) inserts(db string) (sizes []int, most int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Sorted(slices.Values(c.insertSizes[db])), c.mostInserting
}

func (c *commands) insertDone(name string) {
	if name != "insert" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inserting--
}

func (c *commands) byName(db string) map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.n[db])
}

func (c *commands) total(db string) int {
	n := 0
	for _, k := range c.byName(db) {
		n += k
	}
	return n
}

// monitored is a client of env's FerretDB whose commands are counted.
func monitored(t *testing.T, env *projtest.Env) (*mongo.Client, *commands) {
	t.Helper()
	c := &commands{}
	c.reset()
	client, err := mongo.Connect(options.Client().ApplyURI(env.Ferret.URI()).SetMonitor(&mevent.CommandMonitor{
		Started: func(_ context.Context, e *mevent.CommandStartedEvent) {
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.n[e.DatabaseName] == nil {
				c.n[e.DatabaseName] = map[string]int{}
			}
			c.n[e.DatabaseName][e.CommandName]++
			if e.CommandName == "insert" {
				docs, _ := e.Command.Lookup("documents").Array().Values()
				c.insertSizes[e.DatabaseName] = append(c.insertSizes[e.DatabaseName], len(docs))
				c.inserting++
				c.mostInserting = max(c.mostInserting, c.inserting)
			}
		},
		Succeeded: func(_ context.Context, e *mevent.CommandSucceededEvent) { c.insertDone(e.CommandName) },
		Failed:    func(_ context.Context, e *mevent.CommandFailedEvent) { c.insertDone(e.CommandName) },
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = client.Disconnect(ctx)
	})
	return client, c
}

// The work of an event does not grow with its owner: the commands sent for an event of
// a user with one todo and of a user with 5,000 are the same two writes by _id, on
// both paths; and deleting the large user costs one write per todo plus one for the
// stats per batch.
func TestCostPerEventDoesNotGrowWithOwner(t *testing.T) {
	t.Parallel()
	env := projtest.New(t)
	db := env.Database(t, "cost")
	w := projtest.NewWorld(t)
	small, big := w.CreateUser(), w.CreateUser()
	smallTodo := w.CreateTodo(small, "only")
	var bigTodos []uuid.UUID
	for i := range 5000 {
		bigTodos = append(bigTodos, w.CreateTodo(big, fmt.Sprintf("t%d", i)))
	}
	// Loaded through the FerretDB path: new todos go in unordered InsertMany.
	loader := project.New(db, 4, ferretPath.opts...)
	for events := range slices.Chunk(w.Events, 1000) {
		apply(t, loader, events...)
	}
	requireConverged(t, db, w)

	client, count := monitored(t, env)
	mdb := client.Database(db.Name())
	cost := func(p *project.Projector, events ...event.Envelope) map[string]int {
		t.Helper()
		count.reset()
		for _, r := range apply(t, p, events...) {
			if r.Outcome != project.Applied {
				t.Fatalf("outcome %v, want applied", r.Outcome)
			}
		}
		return count.byName(db.Name())
	}
	done := true
	for i, path := range []writePath{ferretPath, mongoPath} {
		p := project.New(mdb, 4, path.opts...)
		w.SetCompleted(smallTodo, done)
		ofSmall := cost(p, last(w))
		w.SetCompleted(bigTodos[i], true)
		ofBig := cost(p, last(w))
		done = !done
		if !maps.Equal(ofSmall, ofBig) || ofBig["update"] != 2 || len(ofBig) != 1 {
			t.Errorf("%s: an event of the user with 1 todo sent %v, of the user with 5,000 %v; want the same two updates",
				path.name, ofSmall, ofBig)
		}
	}

	w.DeleteUser(big)
	deletes := w.Events[len(w.Events)-5001:]
	// FerretDB: one upsert per todo, and the stats once for the batch.
	if got := cost(project.New(mdb, 4, ferretPath.opts...), deletes[:100]...); got["update"] != 101 || len(got) != 1 {
		t.Errorf("ferretdb: deleting 100 todos sent %v, want 101 updates", got)
	}
	// MongoDB: one bulk for the todos; the stats snapshot, already written by the
	// previous batch, meets E11000 in its bulk and once more on the retry.
	if got := cost(project.New(mdb, 4, mongoPath.opts...), deletes[100:130]...); got["update"] != 3 || len(got) != 1 {
		t.Errorf("mongodb: deleting 30 todos sent %v, want 3 updates", got)
	}
}

// FerretDB runs one insertMany's rows one INSERT after another on one PostgreSQL
// connection: a batch's new documents go in commands of at most 100, several in flight,
// never more than the projector's bound.
func TestNewDocumentsInConcurrentChunks(t *testing.T) {
	t.Parallel()
	env := projtest.New(t)
	client, count := monitored(t, env)
	w := projtest.NewWorld(t)
	u := w.CreateUser()
	for i := range 950 {
		w.CreateTodo(u, fmt.Sprintf("t%d", i))
	}
	const bound = 4
	for _, path := range []writePath{ferretPath, ferretInsertFirst} {
		t.Run(path.name, func(t *testing.T) {
			db := env.Database(t, "chunks_"+strings.ReplaceAll(path.name, "-", "_"))
			count.reset()
			apply(t, project.New(client.Database(db.Name()), bound, path.opts...), w.Events...)
			requireConverged(t, db, w)
			// The user and its stats, one document each; the todos in 9 commands of 100 and one of 50.
			sizes, most := count.inserts(db.Name())
			want := []int{1, 1, 50, 100, 100, 100, 100, 100, 100, 100, 100, 100}
			if !slices.Equal(sizes, want) {
				t.Errorf("insert commands of %v documents, want %v", sizes, want)
			}
			if most < 2 || most > bound {
				t.Errorf("%d insert commands in flight at most, want 2 to %d", most, bound)
			}
		})
	}
}
