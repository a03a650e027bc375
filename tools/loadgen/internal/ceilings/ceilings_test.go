package ceilings

import (
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/outboxtodo/outboxtodo/shared/readmodel"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
	"github.com/outboxtodo/outboxtodo/tools/devstack/ferret"
	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/report"
)

// The ceilings run on the stand-in to the end (no bulk update that would hang it),
// measure what they were asked to, and leave the collection as they found it.
func TestCeilingsOnFerretDB(t *testing.T) {
	t.Parallel()
	srv := ferret.StartTest(t)
	ctx := sharedtest.Context(t, 2*time.Minute)
	coll := srv.Client(t).Database("projload_test").Collection(readmodel.CollTodos)
	if _, err := coll.InsertOne(ctx, todoDoc("resident", "someone", 3)); err != nil {
		t.Fatal(err)
	}

	// More upserts than inserts: the inserts grow to cover them.
	got, err := Run(ctx, coll, Settings{Inserts: 120, Upserts: 150, Batch: 50, Concurrency: 4, Limit: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if got.Collection != "projload_test.todos" {
		t.Errorf("ran on %s, want projload_test.todos", got.Collection)
	}
	want := []report.CeilingRun{
		{Operation: report.OpInsertMany, Concurrency: 1, Batch: 50, Docs: 150},
		{Operation: report.OpInsertMany, Concurrency: 4, Batch: 50, Docs: 150},
		{Operation: report.OpUpsert, Concurrency: 1, Docs: 150},
		{Operation: report.OpUpsert, Concurrency: 4, Docs: 150},
	}
	if len(got.Ceilings) != len(want) {
		t.Fatalf("ceilings = %+v, want %d of them", got.Ceilings, len(want))
	}
	for i, w := range want {
		g := got.Ceilings[i]
		if g.Operation != w.Operation || g.Concurrency != w.Concurrency || g.Batch != w.Batch || g.Docs != w.Docs || g.Seconds <= 0 || g.DocsPerSec <= 0 {
			t.Errorf("ceiling %d = %+v, want %+v with a positive time and rate", i, g, w)
		}
	}
	n, err := coll.CountDocuments(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("%d documents left after the ceilings, want only the resident one", n)
	}
}
