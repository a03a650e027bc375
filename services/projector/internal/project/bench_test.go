package project_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"golang.org/x/sync/errgroup"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/project"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/projtest"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
)

// BenchmarkFerretDBPath compares the FerretDB path's apply rate with the server's raw
// ceiling for the same writes at the same concurrency (16, WRITE_CONCURRENCY's
// default), on a todos collection of 10,000 and 50,000 documents with the GIN indexes
// in place. A batch is 100 events of owners drawn from 1,000 (BATCH_SIZE's default):
// "updated" events of existing todos, each one guarded upsert, plus one stats upsert
// per owner of the batch; "created" events of new todos, one unordered insertMany, plus
// the stats upserts. The raw side sends those very writes, prepared beforehand, with
// nothing else around them. Run it alone on a quiet machine:
//
//	go test -run '^$' -bench FerretDBPath -benchtime 30x ./internal/project/
func BenchmarkFerretDBPath(b *testing.B) {
	env := projtest.New(b)
	for _, size := range []int{10_000, 50_000} {
		db := env.Database(b, fmt.Sprintf("bench_%d", size))
		w := projtest.NewWorld(b)
		owners := make([]uuid.UUID, 1000)
		for i := range owners {
			owners[i] = w.CreateUser()
		}
		var todos []uuid.UUID
		for i := range size {
			todos = append(todos, w.CreateTodo(owners[i%len(owners)], fmt.Sprintf("todo %d", i)))
		}
		loader := project.New(db, 16, project.OnServer(project.FerretDB), project.InsertFirst())
		ctx := context.Background()
		for i := 0; i < len(w.Events); i += 1000 {
			for _, r := range loader.Apply(ctx, w.Events[i:min(i+1000, len(w.Events))]) {
				if r.Err != nil {
					b.Fatal(r.Err)
				}
			}
		}
		rng := rand.New(rand.NewPCG(uint64(size), 1))
		batch := func(kind string) []event.Envelope {
			from := len(w.Events)
			for range 100 {
				if kind == "created" {
					w.CreateTodo(owners[rng.IntN(len(owners))], "new")
					continue
				}
				td := todos[rng.IntN(len(todos))]
				w.SetCompleted(td, !w.Todos[td].Completed)
			}
			return w.Events[from:]
		}
		p := project.New(db, 16, project.OnServer(project.FerretDB))
		for _, kind := range []string{"updated", "created"} {
			b.Run(fmt.Sprintf("%d/%s/apply", size, kind), func(b *testing.B) {
				var elapsed time.Duration
				for b.Loop() {
					events := batch(kind)
					start := time.Now()
					for _, r := range p.Apply(ctx, events) {
						if r.Err != nil {
							b.Fatal(r.Err)
						}
					}
					elapsed += time.Since(start)
				}
				b.ReportMetric(float64(100*b.N)/elapsed.Seconds(), "events/s")
			})
			b.Run(fmt.Sprintf("%d/%s/raw", size, kind), func(b *testing.B) {
				var elapsed time.Duration
				for b.Loop() {
					ops := rawWrites(b, db, batch(kind))
					start := time.Now()
					runConcurrently(16, ops)
					elapsed += time.Since(start)
				}
				b.ReportMetric(float64(100*b.N)/elapsed.Seconds(), "events/s")
			})
		}
	}
}

// rawWrites are the writes the FerretDB path makes of a batch of todo events: one per
// todo (an insertMany of the new ones), one per owner's newest stats snapshot.
func rawWrites(b *testing.B, db *mongo.Database, events []event.Envelope) []func() {
	ctx := context.Background()
	todos, stats := db.Collection(readmodel.CollTodos), db.Collection(readmodel.CollStats)
	var (
		ops    []func()
		fresh  []any
		newest = map[uuid.UUID]event.Stats{}
	)
	for _, e := range events {
		td, err := e.Todo()
		if err != nil {
			b.Fatal(err)
		}
		doc := bson.D{{Key: "user_id", Value: td.UserID.String()}, {Key: "title", Value: td.Title}, {Key: "notes", Value: td.Notes},
			{Key: "completed", Value: td.Completed}, {Key: "completed_at", Value: td.CompletedAt}, {Key: "due", Value: td.Due},
			{Key: "priority", Value: td.Priority}, {Key: "version", Value: td.Version}, {Key: "created_at", Value: td.CreatedAt},
			{Key: "updated_at", Value: td.UpdatedAt}, {Key: "projected_at", Value: time.Now()}}
		if e.Type == event.TodoCreated {
			fresh = append(fresh, append(bson.D{{Key: "_id", Value: td.ID.String()}}, doc...))
		} else {
			ops = append(ops, upsert(b, todos, td.ID.String(), td.Version, bson.D{{Key: "$set", Value: doc},
				{Key: "$unset", Value: bson.D{{Key: "deleted", Value: ""}, {Key: "deleted_at", Value: ""}}}}))
		}
		if s := *e.Stats; s.Version > newest[e.OwnerID].Version {
			newest[e.OwnerID] = s
		}
	}
	if len(fresh) > 0 {
		ops = append(ops, func() {
			if _, err := todos.InsertMany(ctx, fresh, options.InsertMany().SetOrdered(false)); err != nil {
				b.Error(err)
			}
		})
	}
	for owner, s := range newest {
		ops = append(ops, upsert(b, stats, owner.String(), s.Version, bson.D{{Key: "$set", Value: bson.D{
			{Key: "open", Value: s.Open}, {Key: "completed", Value: s.Completed}, {Key: "total", Value: s.Total()},
			{Key: "version", Value: s.Version}, {Key: "deleted", Value: s.Deleted}, {Key: "updated_at", Value: time.Now()}}},
			{Key: "$unset", Value: bson.D{{Key: "source_version", Value: ""}}}}))
	}
	return ops
}

func upsert(b *testing.B, coll *mongo.Collection, id string, v int64, update bson.D) func() {
	filter := bson.D{{Key: "_id", Value: id}, {Key: "version", Value: bson.D{{Key: "$not", Value: bson.D{{Key: "$gte", Value: v}}}}}}
	return func() {
		if _, err := coll.UpdateOne(context.Background(), filter, update, options.UpdateOne().SetUpsert(true)); err != nil {
			b.Error(err)
		}
	}
}

func runConcurrently(n int, ops []func()) {
	var g errgroup.Group
	g.SetLimit(n)
	for _, op := range ops {
		g.Go(func() error { op(); return nil })
	}
	_ = g.Wait()
}
