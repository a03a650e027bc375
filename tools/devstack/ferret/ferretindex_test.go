package ferret_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
	"github.com/outboxtodo/outboxtodo/shared/readmodel/ferretindex"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
	"github.com/outboxtodo/outboxtodo/tools/devstack/ferret"
)

// The GIN indexes turn FerretDB's equality lookups from sequential scans into index
// scans: FerretDB's own plan (its explain command) is checked before and after, for a
// lookup by _id and for the todos of one owner, and PostgreSQL's statistics show that
// FerretDB's prepared lookups really use them, also on connections that had run the
// same lookups before the indexes existed. Every equality-filtered field of the
// read-model and control databases gets its index, also for collections that did not
// exist before, and a second Ensure changes nothing.
func TestFerretIndexesServeLookups(t *testing.T) {
	t.Parallel()
	srv := ferret.StartTest(t)
	ctx := sharedtest.Context(t, 2*time.Minute)
	client := srv.Client(t)
	rm, ctl := client.Database("rm"), client.Database("ctl")
	todos := rm.Collection(readmodel.CollTodos)
	insertTodos(ctx, t, todos, 2000)

	byID := bson.D{{Key: "_id", Value: todoID(7)}}
	byOwner := bson.D{{Key: "user_id", Value: ownerOf(7)}}
	for _, f := range []bson.D{byID, byOwner} {
		if plan := ferret.ExplainFind(t, rm, readmodel.CollTodos, f); !strings.Contains(plan, `"Seq Scan"`) {
			t.Fatalf("without the GIN indexes, find %v: want a Seq Scan, got %s", f, plan)
		}
	}
	// Past PostgreSQL's five custom plans per prepared statement, while only a
	// sequential scan is possible.
	lookups := func(n int) {
		for i := range n {
			if err := todos.FindOne(ctx, bson.D{{Key: "_id", Value: todoID(i)}}).Err(); err != nil {
				t.Fatal(err)
			}
			if _, err := todos.CountDocuments(ctx, bson.D{{Key: "user_id", Value: ownerOf(i)}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	lookups(20)

	var rep ferretindex.Report
	for range 2 { // the second call finds everything in place
		var err error
		if rep, err = ferretindex.Ensure(ctx, srv.PostgreSQLURL(), rm, ctl); err != nil {
			t.Fatal(err)
		}
		if rep.CustomPlansSet {
			t.Error("Ensure set plan_cache_mode, which StartTest had set before FerretDB started")
		}
	}
	pg, err := pgx.Connect(ctx, srv.PostgreSQLURL())
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close(context.Background())
	got := srv.GINIndexes(t)
	want := map[string]bool{}
	for _, db := range []struct {
		name   string
		fields []ferretindex.Field
	}{{"rm", ferretindex.ReadModelFields}, {"ctl", ferretindex.ControlFields}} {
		for _, f := range db.fields {
			key := db.name + "." + f.Collection + "." + f.Field
			want[key] = true
			if got[key] == "" {
				t.Errorf("no GIN index on %s; GIN indexes: %v", key, got)
			}
		}
	}
	if len(got) != len(want) || len(rep.Indexes) != len(want) {
		t.Errorf("GIN indexes %v (Ensure reported %d), want one on each of %v", got, len(rep.Indexes), want)
	}

	idIndex, ownerIndex := got["rm.todos._id"], got["rm.todos.user_id"]
	for _, c := range []struct {
		filter bson.D
		index  string
	}{{byID, idIndex}, {byOwner, ownerIndex}} {
		plan := ferret.ExplainFind(t, rm, readmodel.CollTodos, c.filter)
		if !strings.Contains(plan, `"Bitmap Index Scan"`) || !strings.Contains(plan, `"`+c.index+`"`) {
			t.Errorf("find %v: want a Bitmap Index Scan on %s, got %s", c.filter, c.index, plan)
		}
	}

	const n = 100
	lookups(n)
	// Backends report their statistics when idle, within seconds.
	sharedtest.Eventually(t, time.Minute, func() (bool, string) {
		ids, owners := indexScans(ctx, t, pg, idIndex), indexScans(ctx, t, pg, ownerIndex)
		return ids >= n && owners >= n, fmt.Sprintf("after %d lookups by _id and by owner through FerretDB, its queries used the GIN indexes %d and %d times", n, ids, owners)
	})

	// Ensure sets the plan cache mode where it is missing, for new sessions.
	if _, err := pg.Exec(ctx, `ALTER DATABASE `+pgx.Identifier{pg.Config().Database}.Sanitize()+` RESET plan_cache_mode`); err != nil {
		t.Fatal(err)
	}
	if rep, err = ferretindex.Ensure(ctx, srv.PostgreSQLURL(), rm, ctl); err != nil || !rep.CustomPlansSet {
		t.Fatalf("Ensure on a database without the plan cache mode: set %v, %v", rep.CustomPlansSet, err)
	}
	fresh, err := pgx.Connect(ctx, srv.PostgreSQLURL())
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close(context.Background())
	var mode string
	if err := fresh.QueryRow(ctx, `SHOW plan_cache_mode`).Scan(&mode); err != nil || mode != ferretindex.CustomPlans.Value {
		t.Errorf("plan_cache_mode of a new session = %q, %v; want %s", mode, err, ferretindex.CustomPlans.Value)
	}
}

func indexScans(ctx context.Context, t *testing.T, pg *pgx.Conn, index string) int64 {
	t.Helper()
	var n int64
	if err := pg.QueryRow(ctx, `SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = $1`, index).Scan(&n); err != nil {
		t.Fatalf("scans of %s: %v", index, err)
	}
	return n
}

const owners = 100

func todoID(i int) string  { return fmt.Sprintf("todo-%07d", i) }
func ownerOf(i int) string { return fmt.Sprintf("user-%03d", i%owners) }

// insertTodos fills coll with n todo-shaped documents with ids todoID(0..n-1), spread
// over the owners, with the cheapest write FerretDB has (unordered insertMany).
func insertTodos(ctx context.Context, t testing.TB, coll *mongo.Collection, n int) {
	t.Helper()
	now := time.Now().UTC()
	for start := 0; start < n; start += 1000 {
		docs := make([]any, 0, 1000)
		for i := start; i < min(n, start+1000); i++ {
			docs = append(docs, bson.D{
				{Key: "_id", Value: todoID(i)}, {Key: "user_id", Value: ownerOf(i)}, {Key: "title", Value: "a todo of average length"},
				{Key: "notes", Value: nil}, {Key: "completed", Value: i%3 == 0}, {Key: "completed_at", Value: nil}, {Key: "due", Value: nil},
				{Key: "priority", Value: "normal"}, {Key: "version", Value: int64(1)}, {Key: "created_at", Value: now}, {Key: "updated_at", Value: now},
			})
		}
		if _, err := coll.InsertMany(ctx, docs, options.InsertMany().SetOrdered(false)); err != nil {
			t.Fatalf("insert todos: %v", err)
		}
	}
}

// BenchmarkFerretIndexes measures FerretDB's findOne by _id and version-guarded upsert
// of an existing document, one at a time on one connection, over 20,000 todos: without
// and then with the GIN indexes, on a database with synchronous_commit off (as in the
// tests and make run); and with the indexes, on one with synchronous_commit on. Report
// them, never assert them:
//
//	go test -run '^$' -bench FerretIndexes -benchtime 2000x ./tools/devstack/ferret/
func BenchmarkFerretIndexes(b *testing.B) {
	const docs = 20000
	ctx := sharedtest.Context(b, 10*time.Minute)
	for _, mode := range []struct {
		name     string
		asyncOff bool
	}{{"synchronous_commit=off", true}, {"synchronous_commit=on", false}} {
		srv, err := ferret.Start(ctx, ferret.Config{Addr: "127.0.0.1:0", PostgreSQLURL: dbtest.NewEmpty(b), SynchronousCommitOff: mode.asyncOff})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = srv.Stop() })
		db := srv.Client(b).Database("bench")
		todos := db.Collection(readmodel.CollTodos)
		insertTodos(ctx, b, todos, docs)
		version := int64(1)
		run := func(b *testing.B, name string) {
			b.Run(name+"/findOne", func(b *testing.B) {
				for i := 0; b.Loop(); i++ {
					if err := todos.FindOne(ctx, bson.D{{Key: "_id", Value: todoID(i * 7919 % docs)}}).Err(); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
			})
			b.Run(name+"/guardedUpsert", func(b *testing.B) {
				for i := 0; b.Loop(); i++ {
					version++ // always newer: every upsert writes
					_, err := todos.UpdateOne(ctx, bson.D{{Key: "_id", Value: todoID(i * 7919 % docs)}, {Key: "version", Value: bson.D{{Key: "$lt", Value: version}}}},
						bson.D{{Key: "$set", Value: bson.D{{Key: "version", Value: version}, {Key: "title", Value: "renamed"}}}}, options.UpdateOne().SetUpsert(true))
					if err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
			})
		}
		b.Run(mode.name, func(b *testing.B) {
			if mode.asyncOff {
				run(b, "seqscan")
			}
			if _, err := ferretindex.Ensure(ctx, srv.PostgreSQLURL(), db, db); err != nil {
				b.Fatal(err)
			}
			run(b, "gin")
		})
	}
}
