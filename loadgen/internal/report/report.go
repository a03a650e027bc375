// Package report holds the results of one benchmark run and renders them: JSON (every
// figure), a markdown table with the targets as ratios to the same-run baselines, and
// a PNG of latency percentiles, lag and backlog over time.
package report

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"time"

	"github.com/outboxtodo/outboxtodo/loadgen/internal/baseline"
	"github.com/outboxtodo/outboxtodo/loadgen/internal/pgbench"
	"github.com/outboxtodo/outboxtodo/loadgen/internal/stats"
	"github.com/outboxtodo/outboxtodo/loadgen/internal/steps"
)

// Results is everything one run measured.
type Results struct {
	Started  time.Time `json:"started"`
	Machine  string    `json:"machine"`
	Command  string    `json:"command"`
	Settings string    `json:"settings"`
	Seconds  float64   `json:"seconds"`

	PgBench1  *pgbench.Result   `json:"pgbench_1"`
	PgBenchC  *pgbench.Result   `json:"pgbench_c"`
	Dual1     *stats.Summary    `json:"dual_write_1"`
	DualC     *stats.Summary    `json:"dual_write_c"`
	API1      *Phase            `json:"api_1"`
	APIC      *Phase            `json:"api_c"`
	Steps     []Step            `json:"steps"`
	MaxRate   float64           `json:"max_sustained_rate"`
	FailRate  float64           `json:"first_growing_rate"`
	Half      *Phase            `json:"half_rate"`
	Eighty    *Phase            `json:"eighty_percent_rate"`
	Ceiling   *baseline.Ceiling `json:"bulk_upsert_ceiling"`
	Rebuild   *Rebuild          `json:"rebuild"`
	Processes []Proc            `json:"processes"`
	Timeline  []Tick            `json:"timeline"`
	Profiles  []string          `json:"profiles"`
	Notes     []string          `json:"notes"`
}

// Phase is one load phase of the API.
type Phase struct {
	Name       string                   `json:"name"`
	Clients    int                      `json:"clients"`
	Rate       float64                  `json:"rate,omitempty"` // open loop; 0 closed
	Seconds    float64                  `json:"seconds"`
	Load1      float64                  `json:"load1"`
	Routes     map[string]stats.Summary `json:"routes"`
	Writes     float64                  `json:"writes_per_sec"`
	Missed     int                      `json:"missed_sends,omitempty"`
	LagBB      *stats.Summary           `json:"lag_blackbox,omitempty"`
	LagBBPoll  float64                  `json:"lag_blackbox_poll_ms,omitempty"`
	LagUnseen  int                      `json:"lag_blackbox_unseen,omitempty"`
	LagHist    *Quantiles               `json:"lag_projector_histogram,omitempty"`
	Slope      float64                  `json:"backlog_slope_per_sec"`
	Grew       bool                     `json:"backlog_grew"`
	Series     []stats.Point            `json:"create_series,omitempty"`
	LagSeries  []stats.Point            `json:"lag_blackbox_series,omitempty"`
	StartedSec float64                  `json:"started_at_sec"`
}

// Quantiles of the projector's own lag histogram over a phase, in milliseconds.
type Quantiles struct {
	Count float64 `json:"count"`
	P50   float64 `json:"p50_ms"`
	P95   float64 `json:"p95_ms"`
	P99   float64 `json:"p99_ms"`
}

// Step is one step of the rate search.
type Step struct {
	Rate     float64         `json:"rate"`
	Achieved float64         `json:"achieved_writes_per_sec"`
	Slope    float64         `json:"backlog_slope_per_sec"`
	Grew     bool            `json:"grew"`
	Load1    float64         `json:"load1"`
	Readings []steps.Reading `json:"readings"`
}

// Rebuild is the timing of `projector rebuild`.
type Rebuild struct {
	Events     uint64  `json:"events"`
	Seconds    float64 `json:"seconds"`
	EventsPerS float64 `json:"events_per_sec"`
	Complete   bool    `json:"complete"`
	Documents  int64   `json:"documents_written_when_incomplete,omitempty"`
	Load1      float64 `json:"load1"`
	Error      string  `json:"error,omitempty"`
}

// Proc is one process's CPU and memory over the run.
type Proc struct {
	Name       string  `json:"name"`
	PID        int     `json:"pid"`
	CPUSeconds float64 `json:"cpu_seconds"`
	CPUPct     float64 `json:"cpu_pct_of_one_core"`
	PeakRSSMB  float64 `json:"peak_rss_mb"`
	StartRSSMB float64 `json:"rss_after_warmup_mb"`
	EndRSSMB   float64 `json:"rss_end_mb"`
}

// Tick is one second of the run's timeline.
type Tick struct {
	T       float64            `json:"t"`
	Load1   float64            `json:"load1"`
	Backlog int64              `json:"outbox_backlog"`
	Pending uint64             `json:"stream_pending"`
	LagSec  float64            `json:"projection_lag_sec"`
	RSSMB   map[string]float64 `json:"rss_mb"`
	CPUPct  map[string]float64 `json:"cpu_pct"`
	Phase   string             `json:"phase"`
}

// WriteJSON writes r to path.
func (r *Results) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode results: %w", err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// Ratio is a/b, NaN when either is missing.
func Ratio(a, b float64) float64 {
	if b == 0 || math.IsNaN(a) || math.IsNaN(b) {
		return math.NaN()
	}
	return a / b
}

// Verdict says whether got meets a target (below when lower is better).
func Verdict(got, target float64, lowerIsBetter bool) string {
	switch {
	case math.IsNaN(got):
		return "not measured"
	case lowerIsBetter && got <= target, !lowerIsBetter && got >= target:
		return "met"
	}
	return "MISSED"
}

func failed(rate float64) string {
	if rate == 0 {
		return "none (the ceiling is above every rate tried)"
	}
	return fmt.Sprintf("%.0f writes/s", rate)
}

func f(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", v)
}

// WriteMarkdown renders the summary table.
func (r *Results) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("# Benchmark run %s\n\n", r.Started.UTC().Format(time.RFC3339))
	p("- machine: %s\n- command: `%s`\n- settings: %s\n- run time: %.0f s\n\n", r.Machine, r.Command, r.Settings, r.Seconds)

	p("## Targets, as ratios to the same-run baselines\n\n| target | measured | ratio | goal | verdict |\n|---|---|---|---|---|\n")
	if r.API1 != nil && r.PgBench1 != nil {
		c := r.API1.Routes["POST /v1/todos"]
		x := Ratio(c.P50, r.PgBench1.LatencyAvgMS)
		p("| 1 client: API create p50 / pgbench avg latency | %.2f ms / %.2f ms (load %.1f) | %s× | ≤ 1.5× | %s |\n", c.P50, r.PgBench1.LatencyAvgMS, r.API1.Load1, f(x), Verdict(x, 1.5, true))
	}
	if r.APIC != nil && r.PgBenchC != nil {
		c := r.APIC.Routes["POST /v1/todos"]
		x := Ratio(r.APIC.Writes, r.PgBenchC.TPS)
		p("| %d clients: API writes/s / pgbench TPS | %.0f / %.0f (load %.1f) | %s | ≥ 0.70 | %s |\n", r.APIC.Clients, r.APIC.Writes, r.PgBenchC.TPS, r.APIC.Load1, f(x), Verdict(x, 0.7, false))
		y := Ratio(c.P99, r.PgBenchC.LatencyAvgMS)
		p("| %d clients: API create p99 / pgbench avg latency | %.1f ms / %.1f ms | %s× | ≤ 3× | %s |\n", r.APIC.Clients, c.P99, r.PgBenchC.LatencyAvgMS, f(y), Verdict(y, 3, true))
		if r.DualC != nil {
			z := Ratio(r.DualC.P95, c.P95)
			p("| %d clients: dual-write p95 / API create p95 | %.1f ms / %.1f ms | %s× | ≥ 4× | %s |\n", r.APIC.Clients, r.DualC.P95, c.P95, f(z), Verdict(z, 4, false))
		}
	}
	if r.Half != nil {
		l := math.NaN()
		if r.Half.LagBB != nil && r.Half.LagBB.Count > 0 {
			l = r.Half.LagBB.P99
		}
		h := math.NaN()
		if r.Half.LagHist != nil {
			h = r.Half.LagHist.P99
		}
		p("| lag p99 at half the max rate (%.0f/s), black-box / projector histogram | %s ms / %s ms (load %.1f) | | ≤ 100 ms | %s / %s |\n", r.Half.Rate, f(l), f(h), r.Half.Load1, Verdict(l, 100, true), Verdict(h, 100, true))
	}
	if r.Eighty != nil {
		v := "met"
		if r.Eighty.Grew {
			v = "MISSED"
		}
		p("| no backlog growth at 80%% of the max rate (%.0f/s) | slope %.1f events/s (load %.1f) | | no growth | %s |\n", r.Eighty.Rate, r.Eighty.Slope, r.Eighty.Load1, v)
	}
	if r.Rebuild != nil && r.Ceiling != nil {
		x := Ratio(r.Rebuild.EventsPerS, r.Ceiling.DocsPerSec)
		p("| rebuild events/s / raw bulk-upsert docs/s | %.0f / %.0f (load %.1f) | %s | ≥ 0.50 | %s |\n", r.Rebuild.EventsPerS, r.Ceiling.DocsPerSec, r.Rebuild.Load1, f(x), Verdict(x, 0.5, false))
	}
	for _, pr := range r.Processes {
		if pr.Name == "api" || pr.Name == "publisher" || pr.Name == "projector" {
			p("| %s peak RSS (whole run) | %.0f MB (after warm-up %.0f, end %.0f) | | ≤ 150 MB | %s |\n", pr.Name, pr.PeakRSSMB, pr.StartRSSMB, pr.EndRSSMB, Verdict(pr.PeakRSSMB, 150, true))
		}
	}

	p("\n## Maximum sustained pipeline rate\n\nHighest write rate with no backlog growth (outbox backlog + stream pending): **%.0f writes/s**; first rate that grew: %s.\n\n", r.MaxRate, failed(r.FailRate))
	p("| offered writes/s | achieved | backlog slope (events/s) | grew | load |\n|---|---|---|---|---|\n")
	for _, s := range r.Steps {
		p("| %.0f | %.0f | %.1f | %v | %.1f |\n", s.Rate, s.Achieved, s.Slope, s.Grew, s.Load1)
	}

	p("\n## API latency per route (ms)\n\n| phase | route | count | errors | rps | p50 | p95 | p99 | p99.9 | load |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, ph := range []*Phase{r.API1, r.APIC, r.Half, r.Eighty} {
		if ph == nil {
			continue
		}
		for _, route := range []string{"POST /v1/todos", "PATCH /v1/todos/{id}", "DELETE /v1/todos/{id}"} {
			s, ok := ph.Routes[route]
			if !ok {
				continue
			}
			p("| %s | %s | %d | %d | %.0f | %.2f | %.2f | %.2f | %.2f | %.1f |\n", ph.Name, route, s.Count, s.Errors, s.RPS, s.P50, s.P95, s.P99, s.P999, ph.Load1)
		}
	}
	p("\n## Baselines (same run)\n\n| baseline | clients | throughput/s | avg ms | p50 | p95 | p99 |\n|---|---|---|---|---|---|---|\n")
	for _, pg := range []*pgbench.Result{r.PgBench1, r.PgBenchC} {
		if pg != nil {
			p("| pgbench create transaction | %d | %.0f | %.2f | | | |\n", pg.Clients, pg.TPS, pg.LatencyAvgMS)
		}
	}
	for i, d := range []*stats.Summary{r.Dual1, r.DualC} {
		if d != nil {
			c := 1
			if i == 1 && r.APIC != nil {
				c = r.APIC.Clients
			}
			p("| synchronous dual write (PostgreSQL then MongoDB) | %d | %.0f | %.2f | %.2f | %.2f | %.2f |\n", c, d.RPS, d.Mean, d.P50, d.P95, d.P99)
		}
	}
	if r.Ceiling != nil {
		p("| raw bulk upserts (bulk %d, %d new docs, complete %v) | | %.0f docs/s | | | | |\n", r.Ceiling.BulkSize, r.Ceiling.Docs, r.Ceiling.Complete, r.Ceiling.DocsPerSec)
	}
	if r.Rebuild != nil {
		p("| `projector rebuild` (%d events in the stream, complete %v) | | %.0f events/s | | | | |\n", r.Rebuild.Events, r.Rebuild.Complete, r.Rebuild.EventsPerS)
	}

	p("\n## End-to-end lag, commit to visible in MongoDB (ms)\n\n| phase | black-box p50 | p95 | p99 | samples (unseen) | poll ms | projector histogram p50 | p95 | p99 | events |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, ph := range []*Phase{r.API1, r.APIC, r.Half, r.Eighty} {
		if ph == nil || (ph.LagBB == nil && ph.LagHist == nil) {
			continue
		}
		q := Quantiles{P50: math.NaN(), P95: math.NaN(), P99: math.NaN()}
		if ph.LagHist != nil {
			q = *ph.LagHist
		}
		bb := "| not run | | | | | "
		if ph.LagBB != nil {
			bb = fmt.Sprintf("| %.1f | %.1f | %.1f | %d (%d) | %.1f ", ph.LagBB.P50, ph.LagBB.P95, ph.LagBB.P99, ph.LagBB.Count, ph.LagUnseen, ph.LagBBPoll)
		}
		p("| %s %s| %s | %s | %s | %.0f |\n", ph.Name, bb, f(q.P50), f(q.P95), f(q.P99), q.Count)
	}

	p("\n## Processes (whole run)\n\n| process | CPU s | CPU %% of one core | RSS after warm-up MB | peak RSS MB | end RSS MB |\n|---|---|---|---|---|---|\n")
	for _, pr := range r.Processes {
		p("| %s | %.1f | %.0f | %.0f | %.0f | %.0f |\n", pr.Name, pr.CPUSeconds, pr.CPUPct, pr.StartRSSMB, pr.PeakRSSMB, pr.EndRSSMB)
	}
	if len(r.Profiles) > 0 {
		p("\nCPU profiles (many-client phase): %s\n", strings.Join(r.Profiles, ", "))
	}
	if len(r.Notes) > 0 {
		p("\n## Notes\n\n")
		for _, n := range r.Notes {
			p("- %s\n", n)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
