package main

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/report"
)

// -json prints one document whose ceilings decode as report.Ceilings, the shape
// results.json holds them in.
func TestJSONReport(t *testing.T) {
	t.Parallel()
	ran := report.Ceilings{Collection: "projload_test.todos", CollectionDocs: 1, Ceilings: []report.CeilingRun{
		{Operation: report.OpInsertMany, Concurrency: 4, Batch: 50, Docs: 150, Seconds: 0.5, DocsPerSec: 300},
		{Operation: report.OpUpsert, Concurrency: 4, Docs: 150, Seconds: 1.5, DocsPerSec: 100},
	}}
	var out bytes.Buffer
	if err := (output{Ceilings: ran, Drain: &drain{Events: 10}}).print(&out, true); err != nil {
		t.Fatal(err)
	}
	var back report.Ceilings
	if err := json.Unmarshal(out.Bytes(), &back); err != nil {
		t.Fatalf("-json output %q: %v", out.String(), err)
	}
	if back.Collection != ran.Collection || back.CollectionDocs != ran.CollectionDocs || len(back.Ceilings) != len(ran.Ceilings) || back.Ceilings[1] != ran.Ceilings[1] {
		t.Fatalf("-json round trip = %+v, want %+v", back, ran)
	}
	var whole output
	if err := json.Unmarshal(out.Bytes(), &whole); err != nil || whole.Drain == nil || whole.Drain.Events != 10 {
		t.Fatalf("-json output %q: drain %+v, %v", out.String(), whole.Drain, err)
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
