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

	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/pgbench"
	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/stats"
	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/steps"
)

// Results is everything one run measured.
type Results struct {
	Started  time.Time `json:"started"`
	Machine  string    `json:"machine"`
	Command  string    `json:"command"`
	Settings string    `json:"settings"`
	Seconds  float64   `json:"seconds"`
	// Phases is every phase of the run in order, with its outcome: a failed phase
	// leaves the figures of the others standing.
	Phases []PhaseRun `json:"phases"`

	PgBench1 *pgbench.Result `json:"pgbench_1"`
	PgBenchC *pgbench.Result `json:"pgbench_c"`
	Dual1    *stats.Summary  `json:"dual_write_1"`
	DualC    *stats.Summary  `json:"dual_write_c"`
	API1     *Phase          `json:"api_1"`
	APIC     *Phase          `json:"api_c"`
	// Searches are the step searches for the maximum sustained rate, one per
	// read-model size, smallest first.
	Searches   []*Search   `json:"searches"`
	Applies    []*Apply    `json:"projector_applies"`
	Ceilings   *Ceilings   `json:"raw_ceilings"`
	DeleteUser *DeleteUser `json:"delete_user"`
	Rebuild    *Rebuild    `json:"rebuild"`
	Replicas   *Replicas   `json:"projector_replicas"`
	PgProfile  *PgProfile  `json:"postgres_profile"`
	Processes  []Proc      `json:"processes"`
	Timeline   []Tick      `json:"timeline"`
	Profiles   []string    `json:"profiles"`
	Notes      []string    `json:"notes"`
}

// The outcomes of a phase.
const (
	StatusOK      = "ok"
	StatusFailed  = "FAILED"
	StatusSkipped = "skipped"
)

// PhaseRun is the outcome of one phase of the run.
type PhaseRun struct {
	Name    string  `json:"name"`
	Status  string  `json:"status"`
	Error   string  `json:"error,omitempty"`
	Seconds float64 `json:"seconds"`
}

// Failed lists the phases that failed.
func (r *Results) Failed() []string {
	var out []string
	for _, p := range r.Phases {
		if p.Status == StatusFailed {
			out = append(out, p.Name)
		}
	}
	return out
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

// Search is one step search for the maximum sustained pipeline rate, on a read model
// of a given size, with the phases at half and 80% of the rate it found.
type Search struct {
	Label     string  `json:"label"`
	DocsStart int64   `json:"todo_documents_at_start"`
	DocsEnd   int64   `json:"todo_documents_at_end"`
	Steps     []Step  `json:"steps"`
	MaxRate   float64 `json:"max_sustained_rate"`
	FailRate  float64 `json:"first_growing_rate"`
	Half      *Phase  `json:"half_rate"`
	Eighty    *Phase  `json:"eighty_percent_rate"`
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

// Apply is the projector applying a backlog on its own: Events of one kind were
// written to the outbox and published while it was paused, then it was resumed and
// timed until it had applied them all.
type Apply struct {
	Label          string  `json:"label"`
	Kind           string  `json:"kind"` // event type
	Events         int     `json:"events"`
	DocsBefore     int64   `json:"todo_documents_before"`
	DocsAfter      int64   `json:"todo_documents_after"`
	SeedSeconds    float64 `json:"seed_seconds"`
	PublishSeconds float64 `json:"publish_seconds"`
	Seconds        float64 `json:"apply_seconds"`
	EventsPerSec   float64 `json:"events_per_sec"`
	Load1          float64 `json:"load1"`
}

// Ceilings is the server's raw rates for the projector's kinds of write, on the active
// todos collection (package ceilings measures them; projload -json prints them).
type Ceilings struct {
	Collection     string       `json:"collection"`
	CollectionDocs int64        `json:"collection_docs"` // before the ceilings
	Ceilings       []CeilingRun `json:"ceilings"`
	// Load1 is the bench's load average after the ceilings; projload leaves it out.
	Load1 float64 `json:"load1,omitempty"`
}

// CeilingRun is one raw measurement.
type CeilingRun struct {
	Operation   string  `json:"operation"`
	Concurrency int     `json:"concurrency"`
	Batch       int     `json:"batch,omitempty"`
	Docs        int     `json:"docs"`
	Seconds     float64 `json:"seconds"`
	DocsPerSec  float64 `json:"docs_per_sec"`
}

// The operations of a CeilingRun.
const (
	OpInsertMany = "insertMany"
	OpUpsert     = "upsert"
)

// Best is the highest rate measured for op, at concurrency or, with 0, at any
// concurrency; NaN when none was.
func (c *Ceilings) Best(op string, concurrency int) float64 {
	best := math.NaN()
	if c == nil {
		return best
	}
	for _, r := range c.Ceilings {
		if r.Operation == op && (concurrency == 0 || r.Concurrency == concurrency) && (math.IsNaN(best) || r.DocsPerSec > best) {
			best = r.DocsPerSec
		}
	}
	return best
}

// DeleteUser is the deletion of a user with many todos through the API, until the
// read model shows every todo and the user gone and their stats removed.
type DeleteUser struct {
	Todos       int     `json:"todos"`
	DeleteMS    float64 `json:"delete_request_ms"`
	ConvergeSec float64 `json:"converged_after_sec"`
	Converged   bool    `json:"converged"`
	Load1       float64 `json:"load1"`
}

// Rebuild is the timing of `projector rebuild` into a fresh database.
type Rebuild struct {
	StreamMessages uint64  `json:"stream_messages"`
	Aggregates     int64   `json:"aggregates"` // user and todo documents written
	StatsDocs      int64   `json:"stats_documents"`
	Seconds        float64 `json:"seconds"` // the fill, timed as TimedBy says
	TimedBy        string  `json:"timed_by"`
	WallSeconds    float64 `json:"wall_seconds"` // the whole command, connections and settle included
	PerSec         float64 `json:"aggregates_per_sec"`
	Complete       bool    `json:"complete"`
	Load1          float64 `json:"load1"`
	Error          string  `json:"error,omitempty"`
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

// lagP99 is the black-box lag's p99 of a phase, NaN when it has none.
func lagP99(ph *Phase) float64 {
	if ph == nil || ph.LagBB == nil || ph.LagBB.Count == 0 {
		return math.NaN()
	}
	return ph.LagBB.P99
}

// phases are the API phases in report order: the API's own, then each search's.
func (r *Results) phases() []*Phase {
	out := []*Phase{r.API1, r.APIC}
	for _, s := range r.Searches {
		out = append(out, s.Half, s.Eighty)
	}
	return out
}

// WriteMarkdown renders the summary tables.
func (r *Results) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("# Benchmark run %s\n\n", r.Started.UTC().Format(time.RFC3339))
	p("- machine: %s\n- command: `%s`\n- settings: %s\n- run time: %.0f s\n\n", r.Machine, r.Command, r.Settings, r.Seconds)
	if fl := r.Failed(); len(fl) > 0 {
		p("**%d phase(s) failed: %s.** Their figures are missing or partial; see Phases below.\n\n", len(fl), strings.Join(fl, ", "))
	}

	p("## Targets, as ratios to the same-run baselines\n\n| target | measured | ratio | goal | verdict |\n|---|---|---|---|---|\n")
	r.readSideTargets(p)
	r.writeSideTargets(p)
	r.replicaTargets(p)
	for _, pr := range r.Processes {
		if pr.Name == "api" || pr.Name == "publisher" || pr.Name == "projector" {
			p("| %s peak RSS (whole run) | %.0f MB (after warm-up %.0f, end %.0f) | | ≤ 150 MB | %s |\n", pr.Name, pr.PeakRSSMB, pr.StartRSSMB, pr.EndRSSMB, Verdict(pr.PeakRSSMB, 150, true))
		}
	}

	p("\n## Phases\n\n| phase | status | seconds | error |\n|---|---|---|---|\n")
	for _, ph := range r.Phases {
		p("| %s | %s | %.0f | %s |\n", ph.Name, ph.Status, ph.Seconds, strings.ReplaceAll(ph.Error, "|", "\\|"))
	}
	r.searchTables(p)
	r.readSideTables(p)
	r.replicaTables(p)
	r.routeTable(p)
	r.baselineTable(p)
	r.lagTable(p)
	r.processTables(p)
	_, err := io.WriteString(w, b.String())
	return err
}

// searchTables writes each step search's steps.
func (r *Results) searchTables(p func(string, ...any)) {
	for _, s := range r.Searches {
		p("\n## Maximum sustained pipeline rate, %s (todo documents %d at the start, %d at the end)\n\n", s.Label, s.DocsStart, s.DocsEnd)
		p("Highest write rate with no backlog growth (outbox backlog + stream pending): **%.0f writes/s**; first rate that grew: %s.\n\n", s.MaxRate, failed(s.FailRate))
		p("| offered writes/s | achieved | backlog slope (events/s) | grew | load |\n|---|---|---|---|---|\n")
		for _, st := range s.Steps {
			p("| %.0f | %.0f | %.1f | %v | %.1f |\n", st.Rate, st.Achieved, st.Slope, st.Grew, st.Load1)
		}
	}
}

// routeTable writes the API's latency per written route and phase.
func (r *Results) routeTable(p func(string, ...any)) {
	p("\n## API latency per route (ms)\n\n| phase | route | count | errors | rps | p50 | p95 | p99 | p99.9 | load |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, ph := range r.phases() {
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
}

// baselineTable writes the same-run baselines: pgbench and the old dual write.
func (r *Results) baselineTable(p func(string, ...any)) {
	p("\n## Baselines (same run)\n\n| baseline | clients | throughput/s | avg ms | p50 | p95 | p99 |\n|---|---|---|---|---|---|---|\n")
	for _, pg := range []*pgbench.Result{r.PgBench1, r.PgBenchC} {
		if pg != nil {
			p("| pgbench create transaction | %d | %.0f | %.2f | | | |\n", pg.Clients, pg.TPS, pg.LatencyAvgMS)
		}
	}
	for i, d := range []*stats.Summary{r.Dual1, r.DualC} {
		if d != nil {
			c := 1
			if i == 1 && r.PgBenchC != nil {
				c = r.PgBenchC.Clients
			}
			p("| synchronous dual write (PostgreSQL then MongoDB) | %d | %.0f | %.2f | %.2f | %.2f | %.2f |\n", c, d.RPS, d.Mean, d.P50, d.P95, d.P99)
		}
	}
}

// lagTable writes each phase's end-to-end lag, measured by the black-box probe and by
// the projector's histogram.
func (r *Results) lagTable(p func(string, ...any)) {
	p("\n## End-to-end lag, commit to visible in MongoDB (ms)\n\n| phase | black-box p50 | p95 | p99 | samples (unseen) | poll ms | projector histogram p50 | p95 | p99 | events |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, ph := range r.phases() {
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
}

// processTables writes the processes' CPU and memory, the database's profile, the
// CPU profiles' files and the run's notes.
func (r *Results) processTables(p func(string, ...any)) {
	p("\n## Processes (whole run)\n\n| process | CPU s | CPU %% of one core | RSS after warm-up MB | peak RSS MB | end RSS MB |\n|---|---|---|---|---|---|\n")
	for _, pr := range r.Processes {
		p("| %s | %.1f | %.0f | %.0f | %.0f | %.0f |\n", pr.Name, pr.CPUSeconds, pr.CPUPct, pr.StartRSSMB, pr.PeakRSSMB, pr.EndRSSMB)
	}
	r.pgProfileTables(p)
	if len(r.Profiles) > 0 {
		p("\nCPU profiles (many-client phase): %s\n", strings.Join(r.Profiles, ", "))
	}
	if len(r.Notes) > 0 {
		p("\n## Notes\n\n")
		for _, n := range r.Notes {
			p("- %s\n", n)
		}
	}
}

// readSideTargets writes the target rows of issue 10: the read side's.
func (r *Results) readSideTargets(p func(string, ...any)) {
	if len(r.Searches) > 0 {
		var measured, sizes []string
		for _, s := range r.Searches {
			measured = append(measured, fmt.Sprintf("%s: %.0f/s", s.Label, s.MaxRate))
			sizes = append(sizes, fmt.Sprintf("%d→%d", s.DocsStart, s.DocsEnd))
		}
		last := r.Searches[len(r.Searches)-1]
		x := math.NaN()
		if len(r.Searches) > 1 {
			x = Ratio(last.MaxRate, r.Searches[0].MaxRate)
		}
		p("| max sustained pipeline rate (todo documents during the search) | %s (%s) | %s | ≥ 500/s at the largest, ≥ 0.80 of the smallest | %s / %s |\n",
			strings.Join(measured, ", "), strings.Join(sizes, ", "), f(x), Verdict(last.MaxRate, 500, false), Verdict(x, 0.8, false))
	}
	for _, s := range r.Searches {
		if s.Half == nil {
			continue
		}
		l := lagP99(s.Half)
		bb := "not run"
		if s.Half.LagBB != nil {
			bb = fmt.Sprintf("%.0f / %.0f / %.0f ms", s.Half.LagBB.P50, s.Half.LagBB.P95, s.Half.LagBB.P99)
		}
		p("| %s: black-box lag p50 / p95 / p99 at half the max rate (%.0f/s) | %s (load %.1f) | | p99 ≤ 100 ms | %s |\n", s.Label, s.Half.Rate, bb, s.Half.Load1, Verdict(l, 100, true))
	}
	for _, s := range r.Searches {
		if s.Eighty != nil {
			v := "met"
			if s.Eighty.Grew {
				v = "MISSED"
			}
			p("| %s: no backlog growth at 80%% of the max rate (%.0f/s) | slope %.1f events/s (load %.1f) | | no growth | %s |\n", s.Label, s.Eighty.Rate, s.Eighty.Slope, s.Eighty.Load1, v)
		}
	}
	for _, a := range r.Applies {
		// The projector applies one fetched batch at a time: its new documents go in
		// one insertMany per batch, its other writes as single upserts, its
		// WRITE_CONCURRENCY at a time.
		op, c, what := OpInsertMany, 1, "raw insertMany, one batch at a time"
		if a.Kind == event.TodoUpdated {
			op, c, what = OpUpsert, r.concurrency(), fmt.Sprintf("raw guarded upserts, %d in flight", r.concurrency())
		}
		ceil := r.Ceilings.Best(op, c)
		x := Ratio(a.EventsPerSec, ceil)
		p("| projector applying %s (%s) / %s | %.0f / %.0f per s (load %.1f) | %s | ≥ 0.70 | %s |\n", a.Kind, a.Label, what, a.EventsPerSec, ceil, a.Load1, f(x), Verdict(x, 0.7, false))
	}
	if rb := r.Rebuild; rb != nil {
		ceil := r.Ceilings.Best(OpInsertMany, 0)
		x := Ratio(rb.PerSec, ceil)
		if !rb.Complete {
			x = math.NaN()
		}
		p("| rebuild of %d aggregates / best raw insertMany | %.0f / %.0f per s (load %.1f) | %s | ≥ 0.70 | %s |\n", rb.Aggregates, rb.PerSec, ceil, rb.Load1, f(x), Verdict(x, 0.7, false))
	}
	if d := r.DeleteUser; d != nil {
		x := math.NaN()
		if d.Converged {
			x = d.ConvergeSec
		}
		p("| delete a user with %d todos: read model converged after the API's answer | %s s (DELETE took %.0f ms; load %.1f) | | ≤ 10 s | %s |\n", d.Todos, f(x), d.DeleteMS, d.Load1, Verdict(x, 10, true))
	}
}

// concurrency is the projector's WRITE_CONCURRENCY as the ceilings mirrored it: the
// highest concurrency of its ceilings.
func (r *Results) concurrency() int {
	c := 0
	if r.Ceilings != nil {
		for _, cl := range r.Ceilings.Ceilings {
			c = max(c, cl.Concurrency)
		}
	}
	return c
}

// writeSideTargets writes the target rows of issue 13: the API's, against pgbench and
// the old dual write.
func (r *Results) writeSideTargets(p func(string, ...any)) {
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
}

// readSideTables writes the raw ceilings, the projector's applies, the rebuild and the
// user deletion in full.
func (r *Results) readSideTables(p func(string, ...any)) {
	if c := r.Ceilings; c != nil {
		p("\n## Raw ceilings of the MongoDB-protocol server (package ceilings, on %s with %d documents; load %.1f)\n\n| operation | in flight | batch | documents | seconds | documents/s |\n|---|---|---|---|---|---|\n", c.Collection, c.CollectionDocs, c.Load1)
		for _, cl := range c.Ceilings {
			batch := ""
			if cl.Batch > 0 {
				batch = fmt.Sprint(cl.Batch)
			}
			p("| %s | %d | %s | %d | %.2f | %.0f |\n", cl.Operation, cl.Concurrency, batch, cl.Docs, cl.Seconds, cl.DocsPerSec)
		}
	}
	if len(r.Applies) > 0 {
		p("\n## The projector on a backlog of its own (paused while the outbox was written and published)\n\n| backlog | events | todo documents before → after | seed s | publish s | apply s | events/s | load |\n|---|---|---|---|---|---|---|---|\n")
		for _, a := range r.Applies {
			p("| %s (%s) | %d | %d → %d | %.1f | %.1f | %.1f | %.0f | %.1f |\n", a.Kind, a.Label, a.Events, a.DocsBefore, a.DocsAfter, a.SeedSeconds, a.PublishSeconds, a.Seconds, a.EventsPerSec, a.Load1)
		}
	}
	if rb := r.Rebuild; rb != nil {
		p("\n## Rebuild\n\n`projector rebuild` from a stream of %d messages: %d aggregates (user and todo documents) and %d stats documents in %.1f s (%s; the whole command took %.1f s): %.0f aggregates/s; complete %v.",
			rb.StreamMessages, rb.Aggregates, rb.StatsDocs, rb.Seconds, rb.TimedBy, rb.WallSeconds, rb.PerSec, rb.Complete)
		if rb.Error != "" {
			p(" Error: %s", rb.Error)
		}
		p("\n")
	}
	if d := r.DeleteUser; d != nil {
		p("\n## Deleting a user with %d todos\n\nThe API answered the DELETE in %.0f ms; the read model showed every todo and the user deleted and their stats gone %.2f s after that answer (converged: %v).\n",
			d.Todos, d.DeleteMS, d.ConvergeSec, d.Converged)
	}
}
