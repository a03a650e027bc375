package main

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/outboxtodo/outboxtodo/shared/readmodel"
	"github.com/outboxtodo/outboxtodo/tools/devstack/ferret"
)

// The ceilings run on the stand-in to the end (no bulk update that would hang it),
// measure what they were asked to, and leave the collection as they found it.
func TestCeilingsOnFerretDB(t *testing.T) {
	t.Parallel()
	srv := ferret.StartTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client, err := mongo.Connect(options.Client().ApplyURI(srv.URI()).SetServerSelectionTimeout(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Disconnect(context.Background()) })
	coll := client.Database("projload_test").Collection(readmodel.CollTodos)
	if _, err := coll.InsertOne(ctx, todoDoc("resident", "someone", 3)); err != nil {
		t.Fatal(err)
	}

	// More upserts than inserts: the inserts grow to cover them.
	got, err := ceilings(ctx, coll, 120, 150, 50, 4, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	want := []ceiling{
		{Operation: opInsertMany, Concurrency: 1, Batch: 50, Docs: 150},
		{Operation: opInsertMany, Concurrency: 4, Batch: 50, Docs: 150},
		{Operation: opUpsert, Concurrency: 1, Docs: 150},
		{Operation: opUpsert, Concurrency: 4, Docs: 150},
	}
	if len(got) != len(want) {
		t.Fatalf("ceilings = %+v, want %d of them", got, len(want))
	}
	for i, w := range want {
		g := got[i]
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

	var out bytes.Buffer
	if err := (report{Collection: "projload_test.todos", Ceilings: got}).print(&out, true); err != nil {
		t.Fatal(err)
	}
	var back report
	if err := json.Unmarshal(out.Bytes(), &back); err != nil {
		t.Fatalf("-json output %q: %v", out.String(), err)
	}
	if len(back.Ceilings) != len(got) || back.Ceilings[3] != got[3] {
		t.Fatalf("-json round trip = %+v, want %+v", back.Ceilings, got)
	}
}

func TestParseFlagsRejectsNonsense(t *testing.T) {
	t.Parallel()
	if _, err := parseFlags(nil); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, args := range [][]string{{"-concurrency", "0"}, {"-batch", "0"}, {"-upserts", "-1"}, {"-users", "0"}, {"-inserts", "70000"}} {
		if _, err := parseFlags(args); err == nil {
			t.Errorf("%v: want an error", args)
		}
	}
}
