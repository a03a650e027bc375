package report

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/pgbench"
	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/stats"
)

func TestVerdictAndRatio(t *testing.T) {
	t.Parallel()
	if got := Verdict(1.2, 1.5, true); got != "met" {
		t.Errorf("1.2 ≤ 1.5: %s", got)
	}
	if got := Verdict(0.6, 0.7, false); got != "MISSED" {
		t.Errorf("0.6 ≥ 0.7: %s", got)
	}
	if got := Verdict(Ratio(1, 0), 1, true); got != "not measured" {
		t.Errorf("missing baseline: %s", got)
	}
	if got := Ratio(3, 2); got != 1.5 {
		t.Errorf("Ratio = %v", got)
	}
	if !math.IsNaN(Ratio(math.NaN(), 2)) {
		t.Error("Ratio of NaN is not NaN")
	}
}

func sample() *Results {
	create := stats.Summary{Count: 100, RPS: 500, P50: 1, P95: 4, P99: 9, P999: 20}
	phase := &Phase{Name: "api 32 clients", Clients: 32, Routes: map[string]stats.Summary{"POST /v1/todos": create}, Writes: 800,
		LagBB:  &stats.Summary{Count: 10, P50: 30, P95: 60, P99: 90},
		Series: []stats.Point{{T: 0, P50: 1, P99: 9, N: 50}, {T: 1, P50: 2, P99: 8, N: 50}}, LagSeries: []stats.Point{{T: 0, P50: 30, P99: 90, N: 10}}}
	half := &Phase{Name: "half", Rate: 300, LagBB: &stats.Summary{Count: 50, P50: 20, P95: 70, P99: 150}}
	return &Results{
		Started: time.Unix(0, 0), Machine: "test", Command: "go test",
		Phases: []PhaseRun{{Name: "baselines", Status: StatusOK}, {Name: "rebuild", Status: StatusFailed, Error: "bound | ran out"},
			{Name: "after", Status: StatusSkipped, Error: "needs rebuild"}},
		PgBench1: &pgbench.Result{Clients: 1, TPS: 1000, LatencyAvgMS: 1}, PgBenchC: &pgbench.Result{Clients: 32, TPS: 1000, LatencyAvgMS: 5},
		DualC: &stats.Summary{P95: 20}, API1: phase, APIC: phase,
		Searches: []*Search{
			{Label: "10000 todos", DocsStart: 10000, DocsEnd: 30000, MaxRate: 800, Half: half},
			{Label: "100000 todos", DocsStart: 100000, DocsEnd: 120000, MaxRate: 600, FailRate: 700},
		},
		Ceilings: &Ceilings{Collection: "todo_read.todos", Ceilings: []CeilingRun{
			{Operation: OpInsertMany, Concurrency: 1, Batch: 100, Docs: 1000, Seconds: 0.2, DocsPerSec: 5000},
			{Operation: OpInsertMany, Concurrency: 16, Batch: 100, Docs: 1000, Seconds: 0.125, DocsPerSec: 8000},
			{Operation: OpUpsert, Concurrency: 1, Docs: 100, Seconds: 0.5, DocsPerSec: 200},
			{Operation: OpUpsert, Concurrency: 16, Docs: 100, Seconds: 0.1, DocsPerSec: 1000},
		}},
		Applies: []*Apply{
			{Label: "seeding", Kind: event.TodoCreated, Events: 90000, EventsPerSec: 6000},
			{Label: "completing", Kind: event.TodoUpdated, Events: 10000, EventsPerSec: 600},
		},
		Rebuild:    &Rebuild{Aggregates: 110000, PerSec: 4000, Complete: true},
		DeleteUser: &DeleteUser{Todos: 10000, DeleteMS: 900, ConvergeSec: 4.5, Converged: true},
		Timeline:   []Tick{{T: 0, Backlog: 5, Pending: 3}, {T: 1, Backlog: 0, Pending: 1}},
	}
}

func TestWriteMarkdown(t *testing.T) {
	t.Parallel()
	r := sample()
	markdown(t, r,
		"**1 phase(s) failed: rebuild.**",
		"| rebuild | FAILED | 0 | bound \\| ran out |",
		"| after | skipped | 0 | needs rebuild |",
		"| 32 clients: API writes/s / pgbench TPS | 800 / 1000 (load 0.0) | 0.80 | ≥ 0.70 | met |",
		"| 32 clients: dual-write p95 / API create p95 | 20.0 ms / 4.0 ms | 5.00× | ≥ 4× | met |",
		"| 1 client: API create p50 / pgbench avg latency | 1.00 ms / 1.00 ms (load 0.0) | 1.00× | ≤ 1.5× | met |",
		"| max sustained pipeline rate (todo documents during the search) | 10000 todos: 800/s, 100000 todos: 600/s (10000→30000, 100000→120000) | 0.75 | ≥ 500/s at the largest, ≥ 0.80 of the smallest | met / MISSED |",
		"| 10000 todos: black-box lag p50 / p95 / p99 at half the max rate (300/s) | 20 / 70 / 150 ms (load 0.0) | | p99 ≤ 100 ms | MISSED |",
		// Creates against insertMany one batch at a time, updates against upserts at
		// the projector's concurrency, the rebuild against the best insertMany.
		"| projector applying todo.created (seeding) / raw insertMany, one batch at a time | 6000 / 5000 per s (load 0.0) | 1.20 | ≥ 0.70 | met |",
		"| projector applying todo.updated (completing) / raw guarded upserts, 16 in flight | 600 / 1000 per s (load 0.0) | 0.60 | ≥ 0.70 | MISSED |",
		"| rebuild of 110000 aggregates / best raw insertMany | 4000 / 8000 per s (load 0.0) | 0.50 | ≥ 0.70 | MISSED |",
		"| delete a user with 10000 todos: read model converged after the API's answer | 4.50 s (DELETE took 900 ms; load 0.0) | | ≤ 10 s | met |",
		"first rate that grew: none",
		"first rate that grew: 700 writes/s",
	)
	if got := r.Failed(); len(got) != 1 || got[0] != "rebuild" {
		t.Errorf("Failed() = %v, want [rebuild]", got)
	}
}

func TestCeilingsBest(t *testing.T) {
	t.Parallel()
	c := sample().Ceilings
	if got := c.Best(OpInsertMany, 0); got != 8000 {
		t.Errorf("best insertMany = %v, want 8000", got)
	}
	if got := c.Best(OpUpsert, 1); got != 200 {
		t.Errorf("upserts one at a time = %v, want 200", got)
	}
	if got := c.Best(OpUpsert, 4); !math.IsNaN(got) {
		t.Errorf("upserts at an unmeasured concurrency = %v, want NaN", got)
	}
	if got := (*Ceilings)(nil).Best(OpUpsert, 0); !math.IsNaN(got) {
		t.Errorf("no ceilings = %v, want NaN", got)
	}
}

func TestWriteFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	r := sample()
	if err := r.WriteJSON(filepath.Join(dir, "r.json")); err != nil {
		t.Fatal(err)
	}
	if err := r.WritePNG(filepath.Join(dir, "r.png")); err != nil {
		t.Fatal(err)
	}
	png, err := os.ReadFile(filepath.Join(dir, "r.png"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatal("r.png is not a PNG")
	}
	// A run that stopped before any API phase still renders.
	if err := (&Results{}).WritePNG(filepath.Join(dir, "empty.png")); err != nil {
		t.Fatal(err)
	}
}
