package report

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outboxtodo/outboxtodo/loadgen/internal/pgbench"
	"github.com/outboxtodo/outboxtodo/loadgen/internal/stats"
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
	return &Results{
		Started: time.Unix(0, 0), Machine: "test", Command: "go test",
		PgBench1: &pgbench.Result{Clients: 1, TPS: 1000, LatencyAvgMS: 1}, PgBenchC: &pgbench.Result{Clients: 32, TPS: 1000, LatencyAvgMS: 5},
		DualC: &stats.Summary{P95: 20}, API1: phase, APIC: phase, MaxRate: 200,
		Timeline: []Tick{{T: 0, Backlog: 5, Pending: 3}, {T: 1, Backlog: 0, Pending: 1}},
	}
}

func TestWriteMarkdown(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	if err := sample().WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{
		"| 32 clients: API writes/s / pgbench TPS | 800 / 1000 (load 0.0) | 0.80 | ≥ 0.70 | met |",
		"| 32 clients: dual-write p95 / API create p95 | 20.0 ms / 4.0 ms | 5.00× | ≥ 4× | met |",
		"| 1 client: API create p50 / pgbench avg latency | 1.00 ms / 1.00 ms (load 0.0) | 1.00× | ≤ 1.5× | met |",
		"first rate that grew: none",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
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
