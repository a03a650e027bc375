// Package bench runs the whole benchmark of issue 7 against a fresh local stack
// (bin/devstack on databases of its own): the same-run baselines (pgbench of the create
// transaction, the old synchronous dual write, the raw bulk-upsert ceiling of the
// MongoDB-protocol server), the API under one and many clients with end-to-end lag
// measured two ways, a step search for the pipeline's maximum sustained rate, lag at
// half of it and growth at 80% of it, and a timed rebuild; then it writes the results.
package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/outboxtodo/outboxtodo/loadgen/internal/baseline"
	"github.com/outboxtodo/outboxtodo/loadgen/internal/driver"
	"github.com/outboxtodo/outboxtodo/loadgen/internal/pgbench"
	"github.com/outboxtodo/outboxtodo/loadgen/internal/procstat"
	"github.com/outboxtodo/outboxtodo/loadgen/internal/report"
	"github.com/outboxtodo/outboxtodo/loadgen/internal/stats"
	"github.com/outboxtodo/outboxtodo/loadgen/internal/steps"
	"github.com/outboxtodo/outboxtodo/migrations"
	sharedpg "github.com/outboxtodo/outboxtodo/shared/postgres"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
)

// runner carries one run's state between its phases.
type runner struct {
	cfg     Config
	log     *slog.Logger
	st      *stack
	res     *report.Results
	start   time.Time
	mongo   *mongo.Client
	raw     string // directory of bulky outputs (profiles, logs), not committed
	clients []*driver.Client

	mu       sync.Mutex
	timeline []report.Tick
	phase    string
	first    map[string]procstat.Usage // at the end of the warm-up
	last     map[string]procstat.Usage
	peak     map[string]int64
}

// Run runs the benchmark and writes results.json, results.md and results.png into
// cfg.ResultsDir.
func Run(ctx context.Context, log *slog.Logger, cfg Config, command string) error {
	log.Info("config", "config", cfg.Masked())
	raw := filepath.Join(cfg.ResultsDir, "raw")
	if err := os.MkdirAll(raw, 0o755); err != nil {
		return fmt.Errorf("results dir: %w", err)
	}
	stamp := time.Now().UTC().Format("20060102_150405")
	name := "bench_" + stamp
	dbURL, err := withDatabase(cfg.AdminURL, name)
	if err != nil {
		return err
	}
	pgURL, err := withDatabase(cfg.AdminURL, name+"_pg")
	if err != nil {
		return err
	}
	if err := createDatabase(ctx, cfg.AdminURL, name); err != nil {
		return err
	}
	if err := createDatabase(ctx, cfg.AdminURL, name+"_pg"); err != nil {
		return err
	}
	defer func() {
		if err := dropDatabases(context.WithoutCancel(ctx), cfg.AdminURL, name, name+"_ferretdb", name+"_pg"); err != nil {
			log.Warn("drop the run's databases", "error", err)
		}
	}()

	logFile, err := os.Create(filepath.Join(raw, "devstack.log"))
	if err != nil {
		return fmt.Errorf("devstack log: %w", err)
	}
	defer logFile.Close()
	st, err := startStack(ctx, cfg, dbURL, logFile)
	if err != nil {
		return err
	}
	defer st.stop()
	log.Info("stack ready", "processes", st.procs)

	mc, err := mongo.Connect(options.Client().ApplyURI(st.mongoURI).SetServerSelectionTimeout(10 * time.Second).SetMaxPoolSize(uint64(cfg.Clients) + 8))
	if err != nil {
		return fmt.Errorf("connect MongoDB: %w", err)
	}
	defer func() { _ = mc.Disconnect(context.WithoutCancel(ctx)) }()

	r := &runner{cfg: cfg, log: log, st: st, mongo: mc, raw: raw, start: time.Now(),
		res:  &report.Results{Started: time.Now().UTC(), Machine: machine(), Command: command},
		peak: map[string]int64{}}
	r.res.Settings = fmt.Sprintf("clients %d, phases %s, baselines %s, steps %s (start %.0f/s ×%.1f, ≤%d), holds %s, mix %d%% complete / %d%% delete / rest create, black-box sample 1 in %d polled every %s",
		cfg.Clients, cfg.Phase, cfg.Baseline, cfg.Step, cfg.StepStart, cfg.StepFactor, cfg.StepMax, cfg.Hold, cfg.CompletePct, cfg.DeletePct, cfg.SampleEvery, cfg.Poll)

	samplerCtx, stopSampler := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { r.sample(samplerCtx) })
	err = r.all(ctx, pgURL)
	stopSampler()
	wg.Wait()
	r.finish()
	if werr := r.write(); werr != nil {
		return fmt.Errorf("%w (run error: %v)", werr, err)
	}
	return err
}

func (r *runner) all(ctx context.Context, pgURL string) error {
	if err := r.baselines(ctx, pgURL); err != nil {
		return err
	}
	if err := r.apiPhases(ctx); err != nil {
		return err
	}
	if err := r.stepSearch(ctx); err != nil {
		return err
	}
	if err := r.ceilingAndRebuild(ctx); err != nil {
		return err
	}
	return nil
}

func (r *runner) setPhase(p string) {
	r.mu.Lock()
	r.phase = p
	r.mu.Unlock()
	r.log.Info("phase", "name", p, "at", time.Since(r.start).Round(time.Second).String())
}

func (r *runner) note(format string, a ...any) {
	r.res.Notes = append(r.res.Notes, fmt.Sprintf(format, a...))
	r.log.Warn("note", "text", fmt.Sprintf(format, a...))
}

func load1() float64 {
	l, err := procstat.LoadAvg()
	if err != nil {
		return math.NaN()
	}
	return l
}

// sample records, every second, the backlog, projection lag, load and each process's
// CPU and memory. It runs until ctx ends.
func (r *runner) sample(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	prev := map[string]procstat.Usage{}
	prevAt := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		tick := report.Tick{T: now.Sub(r.start).Seconds(), Load1: load1(), RSSMB: map[string]float64{}, CPUPct: map[string]float64{}}
		if s, err := r.st.sync(ctx); err == nil {
			tick.Backlog, tick.Pending = s.backlog()
			if s.Projection != nil {
				tick.LagSec = s.Projection.LagSeconds
			}
		} else if ctx.Err() == nil {
			r.log.Warn("sample /health/sync", "error", err)
		}
		cur := map[string]procstat.Usage{}
		for name, pid := range r.st.procs {
			u, err := procstat.Read(pid)
			if err != nil {
				continue
			}
			cur[name] = u
			tick.RSSMB[name] = mb(u.RSS)
			if p, ok := prev[name]; ok {
				tick.CPUPct[name] = math.Round(100 * (u.CPU - p.CPU).Seconds() / now.Sub(prevAt).Seconds())
			}
		}
		prev, prevAt = cur, now
		r.mu.Lock()
		tick.Phase = r.phase
		r.timeline = append(r.timeline, tick)
		r.last = cur
		for n, u := range cur {
			r.peak[n] = max(r.peak[n], u.PeakRS)
		}
		r.mu.Unlock()
	}
}

func mb(b int64) float64 { return math.Round(float64(b)/(1<<20)*10) / 10 }

// markWarm keeps the processes' usage at the end of the warm-up, the base of CPU
// seconds and of memory growth.
func (r *runner) markWarm() {
	first := map[string]procstat.Usage{}
	for name, pid := range r.st.procs {
		if u, err := procstat.Read(pid); err == nil {
			first[name] = u
		}
	}
	r.mu.Lock()
	r.first = first
	r.mu.Unlock()
}

func (r *runner) finish() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.res.Timeline = r.timeline
	r.res.Seconds = time.Since(r.start).Seconds()
	var warm time.Duration
	for _, t := range r.timeline {
		if t.Phase == "warm-up" {
			warm = time.Duration(t.T * float64(time.Second))
		}
	}
	span := time.Since(r.start) - warm
	for name, pid := range r.st.procs {
		f, l := r.first[name], r.last[name]
		p := report.Proc{Name: name, PID: pid, CPUSeconds: (l.CPU - f.CPU).Seconds(), PeakRSSMB: mb(r.peak[name]), StartRSSMB: mb(f.RSS), EndRSSMB: mb(l.RSS)}
		if span > 0 {
			p.CPUPct = math.Round(100 * p.CPUSeconds / span.Seconds())
		}
		r.res.Processes = append(r.res.Processes, p)
	}
}

func (r *runner) write() error {
	if err := r.res.WriteJSON(filepath.Join(r.cfg.ResultsDir, "results.json")); err != nil {
		return err
	}
	var md bytes.Buffer
	if err := r.res.WriteMarkdown(&md); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(r.cfg.ResultsDir, "results.md"), md.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write results.md: %w", err)
	}
	return r.res.WritePNG(filepath.Join(r.cfg.ResultsDir, "results.png"))
}

// baselines measures pgbench and the synchronous dual write while the stack idles.
func (r *runner) baselines(ctx context.Context, pgURL string) error {
	r.setPhase("baselines")
	if _, err := migrations.Up(ctx, pgURL); err != nil {
		return fmt.Errorf("migrate the pgbench database: %w", err)
	}
	users := r.cfg.Clients
	pool, err := sharedpg.Connect(ctx, pgURL, sharedpg.PoolConfig{MaxConns: int32(r.cfg.Clients)})
	if err != nil {
		return err
	}
	defer pool.Close()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	_, err = pool.Exec(sctx, pgbench.SetupSQL(users))
	cancel()
	if err != nil {
		return fmt.Errorf("seed pgbench users: %w", err)
	}
	for _, c := range []int{1, r.cfg.Clients} {
		r.setPhase(fmt.Sprintf("pgbench %d", c))
		res, err := pgbench.Run(ctx, pgURL, c, users, r.cfg.Baseline, r.raw)
		if err != nil {
			return err
		}
		if c == 1 {
			r.res.PgBench1 = &res
		} else {
			r.res.PgBenchC = &res
		}
	}
	db := r.mongo.Database("bench_dual_write")
	defer func() { _ = db.Drop(context.WithoutCancel(ctx)) }()
	for _, c := range []int{1, r.cfg.Clients} {
		r.setPhase(fmt.Sprintf("dual write %d", c))
		s := baseline.DualWrite(ctx, pool, db.Collection("todos"), c, users, r.cfg.Baseline)
		if s.Count == 0 {
			return fmt.Errorf("dual write with %d clients: no write succeeded (%d errors)", c, s.Errors)
		}
		if c == 1 {
			r.res.Dual1 = &s
		} else {
			r.res.DualC = &s
		}
	}
	return nil
}

// todos is the active read model's todos collection, watched by the black-box probe.
func (r *runner) todos(ctx context.Context) (*mongo.Collection, error) {
	db, err := readmodel.NewStore(r.mongo, readmodel.DefaultDatabase).Active(ctx)
	if err != nil {
		return nil, fmt.Errorf("active read model: %w", err)
	}
	return db.Collection(readmodel.CollTodos), nil
}

// load runs one API phase: closed loop over clients when rate is 0, else open loop at
// rate. It then waits for the pipeline to drain, so that the lag of every sampled
// write, and the projector's histogram of this phase's events, are complete.
// phaseOpts say what runs beside a phase's load.
type phaseOpts struct {
	profile bool // CPU profiles of the services
	// probe runs the black-box lag reader. On FerretDB each of its polls scans the
	// todos collection, a load of its own on the server that bounds the pipeline, so the
	// many-client phase, whose figures are the API's, runs without it.
	probe bool
}

func (r *runner) load(ctx context.Context, name string, clients []*driver.Client, rate float64, d time.Duration, opts phaseOpts) (*report.Phase, error) {
	r.setPhase(name)
	var watch *driver.Watcher
	var wg sync.WaitGroup
	// The probe and the profiles end with ctx or with this phase, whichever is first.
	bctx, stopBeside := context.WithCancel(ctx)
	defer func() { stopBeside(); wg.Wait() }()
	if opts.probe {
		coll, err := r.todos(ctx)
		if err != nil {
			return nil, err
		}
		watch = driver.NewWatcher(coll, r.cfg.SampleEvery, r.cfg.Poll, r.log)
		wg.Go(func() { watch.Run(bctx) })
	}

	h0, err := r.st.lagHistogram(ctx)
	if err != nil {
		return nil, err
	}
	rec := stats.NewRecorder()
	drv := driver.New(r.st.apiURL, rec, watch, driver.Mix{CompletePct: r.cfg.CompletePct, DeletePct: r.cfg.DeletePct}, 30*time.Second)
	defer drv.Close()
	if opts.profile {
		wg.Go(func() { r.profiles(bctx) })
	}
	ph := &report.Phase{Name: name, Clients: len(clients), Rate: rate, StartedSec: time.Since(r.start).Seconds()}
	start := time.Now()
	pctx, cancel := context.WithTimeout(ctx, d)
	if rate > 0 {
		_, ph.Missed = drv.OpenLoop(pctx, clients, rate)
	} else {
		drv.ClosedLoop(pctx, clients)
	}
	cancel()
	elapsed := time.Since(start)
	ph.Seconds = elapsed.Seconds()
	ph.Load1 = load1()
	ph.Routes = rec.Routes(elapsed)
	for _, s := range ph.Routes {
		ph.Writes += s.RPS
	}
	ph.Series = stats.Series(rec.Samples(driver.RouteCreate), start, time.Second)
	ph.Slope, ph.Grew = r.growth(start, time.Now(), rate)

	if err := r.drain(ctx); err != nil {
		r.note("%s: %v; its lag figures cover only what arrived before the bound", name, err)
	}
	if watch != nil {
		// One more poll interval, so that the last writes are seen by the probe.
		time.Sleep(3 * r.cfg.Poll)
		lags, unseen, poll := watch.Take()
		lagD := make([]time.Duration, len(lags))
		lagS := make([]stats.Sample, len(lags))
		for i, l := range lags {
			lagD[i] = l.Lag
			lagS[i] = stats.Sample{At: l.Visible, Latency: l.Lag}
		}
		s := stats.Summarize(lagD, 0, 0)
		ph.LagBB, ph.LagUnseen, ph.LagBBPoll = &s, unseen, float64(poll.Microseconds())/1000
		ph.LagSeries = stats.Series(lagS, start, time.Second)
	}
	h1, err := r.st.lagHistogram(ctx)
	if err != nil {
		return nil, err
	}
	if diff, err := h1.Sub(h0); err == nil && diff.Count > 0 {
		ph.LagHist = &report.Quantiles{Count: diff.Count, P50: 1000 * diff.Quantile(0.5), P95: 1000 * diff.Quantile(0.95), P99: 1000 * diff.Quantile(0.99)}
	}
	r.log.Info("phase done", "name", name, "writes_per_sec", math.Round(ph.Writes), "create", ph.Routes[driver.RouteCreate], "lag_blackbox", ph.LagBB, "lag_histogram", ph.LagHist, "slope", ph.Slope)
	return ph, nil
}

// growth is the backlog's slope between from and to, judged against rate (0: the
// closed loop's measured write rate is not known yet, so only the slope is kept).
func (r *runner) growth(from, to time.Time, rate float64) (float64, bool) {
	r.mu.Lock()
	var rs []steps.Reading
	for _, t := range r.timeline {
		at := r.start.Add(time.Duration(t.T * float64(time.Second)))
		if at.Before(from) || at.After(to) {
			continue
		}
		rs = append(rs, steps.Reading{T: t.T, Backlog: float64(t.Backlog) + float64(t.Pending)})
	}
	r.mu.Unlock()
	return steps.Slope(rs), rate > 0 && steps.Grows(rs, rate, r.cfg.Growth)
}

// drain waits until nothing is left between the outbox and the read model.
func (r *runner) drain(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Drain)
	defer cancel()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	var last syncState
	for {
		s, err := r.st.sync(ctx)
		if err == nil {
			last = s
			if o, p := s.backlog(); o == 0 && p == 0 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			o, p := last.backlog()
			return fmt.Errorf("pipeline not drained within %s (outbox %d, stream pending %d)", r.cfg.Drain, o, p)
		case <-t.C:
		}
	}
}

// published waits until the outbox is empty: every write is in the stream.
func (r *runner) published(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Drain)
	defer cancel()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		if s, err := r.st.sync(ctx); err == nil {
			if o, _ := s.backlog(); o == 0 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("outbox not empty within %s", r.cfg.Drain)
		case <-t.C:
		}
	}
}

// profiles takes a CPU profile of each service during the many-client phase and saves
// its top functions beside the results.
func (r *runner) profiles(ctx context.Context) {
	var wg sync.WaitGroup
	for name, admin := range map[string]string{"api": apiAdmin, "publisher": publisherAdmin, "projector": projectorAdmin} {
		wg.Go(func() {
			u := fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", admin, int(r.cfg.Profile.Seconds()))
			pctx, cancel := context.WithTimeout(ctx, r.cfg.Profile+30*time.Second)
			defer cancel()
			client := *r.st.http
			client.Timeout = r.cfg.Profile + 30*time.Second
			st := *r.st
			st.http = &client
			b, err := st.get(pctx, u)
			if err != nil {
				r.log.Warn("profile", "service", name, "error", err)
				return
			}
			path := filepath.Join(r.raw, name+".cpu.pprof")
			if err := os.WriteFile(path, b, 0o644); err != nil {
				r.log.Warn("profile", "service", name, "error", err)
				return
			}
			top, err := exec.CommandContext(pctx, "go", "tool", "pprof", "-top", "-nodecount=25", path).CombinedOutput()
			if err != nil {
				r.log.Warn("pprof top", "service", name, "error", err)
				return
			}
			out := filepath.Join(r.cfg.ResultsDir, "profile-"+name+".txt")
			if err := os.WriteFile(out, top, 0o644); err != nil {
				r.log.Warn("profile", "service", name, "error", err)
				return
			}
			r.mu.Lock()
			r.res.Profiles = append(r.res.Profiles, filepath.Base(out))
			r.mu.Unlock()
		})
	}
	wg.Wait()
}

func (r *runner) apiPhases(ctx context.Context) error {
	r.setPhase("sign-up")
	signup := driver.New(r.st.apiURL, stats.NewRecorder(), nil, driver.Mix{}, 30*time.Second)
	clients, err := signup.Clients(ctx, r.cfg.Clients)
	signup.Close()
	if err != nil {
		return err
	}
	r.clients = clients
	if _, err := r.load(ctx, "warm-up", clients, 0, r.cfg.Warmup, phaseOpts{}); err != nil {
		return err
	}
	r.markWarm()
	if r.res.API1, err = r.load(ctx, "api 1 client", clients[:1], 0, r.cfg.Phase, phaseOpts{probe: true}); err != nil {
		return err
	}
	r.res.APIC, err = r.load(ctx, fmt.Sprintf("api %d clients", len(clients)), clients, 0, r.cfg.Phase, phaseOpts{profile: true})
	return err
}

func (r *runner) stepSearch(ctx context.Context) error {
	if coll, err := r.todos(ctx); err == nil {
		if n, err := coll.EstimatedDocumentCount(ctx); err == nil {
			r.note("the step search began with %d documents in the read model's todos collection (FerretDB scans it on every lookup, so its rate falls as it grows)", n)
		}
	}
	search, err := steps.NewSearch(r.cfg.StepStart, r.cfg.StepFactor, r.cfg.StepPrecision, r.cfg.StepMax)
	if err != nil {
		return err
	}
	for {
		rate := search.Rate()
		name := fmt.Sprintf("step %.0f/s", rate)
		r.setPhase(name)
		rec := stats.NewRecorder()
		drv := driver.New(r.st.apiURL, rec, nil, driver.Mix{CompletePct: r.cfg.CompletePct, DeletePct: r.cfg.DeletePct}, 30*time.Second)
		start := time.Now()
		sctx, cancel := context.WithTimeout(ctx, r.cfg.Step)
		drv.OpenLoop(sctx, r.clients, rate)
		cancel()
		drv.Close()
		end := time.Now()
		slope, grew := r.growth(start, end, rate)
		var achieved float64
		for _, s := range rec.Routes(end.Sub(start)) {
			achieved += s.RPS
		}
		// An API that cannot take the offered rate is a bound too.
		if achieved < 0.9*rate {
			grew = true
		}
		r.mu.Lock()
		var rs []steps.Reading
		for _, t := range r.timeline {
			if t.Phase == name {
				rs = append(rs, steps.Reading{T: t.T, Backlog: float64(t.Backlog) + float64(t.Pending)})
			}
		}
		r.mu.Unlock()
		r.res.Steps = append(r.res.Steps, report.Step{Rate: rate, Achieved: achieved, Slope: slope, Grew: grew, Load1: load1(), Readings: rs})
		r.log.Info("step", "rate", rate, "achieved", math.Round(achieved), "slope", slope, "grew", grew)
		done := search.Record(!grew)
		r.setPhase("drain after " + name)
		if err := r.drain(ctx); err != nil {
			r.note("after %s: %v", name, err)
		}
		if done {
			break
		}
	}
	r.res.MaxRate, r.res.FailRate = search.Result()
	if r.res.FailRate == 0 {
		r.note("the step search never saw growth: the maximum sustained rate is above %.0f/s", r.res.MaxRate)
	}
	if r.res.MaxRate == 0 {
		r.note("no step rate held; the half-rate and 80%% phases are skipped")
		return nil
	}
	var err2 error
	if r.res.Half, err2 = r.load(ctx, "half max rate", r.clients, r.res.MaxRate/2, r.cfg.Hold, phaseOpts{probe: true}); err2 != nil {
		return err2
	}
	r.res.Eighty, err2 = r.load(ctx, "80% max rate", r.clients, 0.8*r.res.MaxRate, r.cfg.Hold, phaseOpts{probe: true})
	return err2
}

func (r *runner) ceilingAndRebuild(ctx context.Context) error {
	r.setPhase("bulk-upsert ceiling")
	db := r.mongo.Database("bench_ceiling")
	c, err := baseline.BulkUpserts(ctx, db.Collection("todos"), r.cfg.CeilingDocs, r.cfg.CeilingBulk, 2*time.Minute)
	_ = db.Drop(context.WithoutCancel(ctx))
	if err != nil {
		return err
	}
	r.res.Ceiling = &c

	// The live projector is paused (SIGSTOP) from here to the end of the rebuild: the
	// top-up would otherwise keep it writing into the same server the rebuild is timed
	// against. Its unacknowledged messages are redelivered after it resumes.
	pid := r.st.procs["projector"]
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		return fmt.Errorf("pause the projector: %w", err)
	}
	defer func() {
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
			r.log.Warn("resume the projector", "error", err)
		}
	}()
	r.note("the live projector was paused (SIGSTOP) during the stream top-up and the rebuild, so the rebuild had the MongoDB-protocol server to itself")
	// Top the stream up to the rebuild's size with more API creates.
	for {
		s, err := r.st.sync(ctx)
		if err != nil {
			return err
		}
		if s.Stream.Messages >= uint64(r.cfg.RebuildEvents) {
			break
		}
		r.setPhase("top up the stream")
		drv := driver.New(r.st.apiURL, stats.NewRecorder(), nil, driver.Mix{}, 30*time.Second)
		tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		drv.ClosedLoop(tctx, r.clients)
		cancel()
		drv.Close()
	}
	if err := r.published(ctx); err != nil {
		r.note("before the rebuild: %v", err)
	}
	s, err := r.st.sync(ctx)
	if err != nil {
		return err
	}
	r.setPhase("rebuild")
	rb := &report.Rebuild{Events: s.Stream.Messages}
	rctx, cancel := context.WithTimeout(ctx, r.cfg.RebuildTimeout+30*time.Second)
	defer cancel()
	target := "bench_rebuild_" + time.Now().UTC().Format("150405")
	cmd := exec.CommandContext(rctx, filepath.Join(r.cfg.BinDir, "projector"), "rebuild",
		"--database", target, "--timeout", r.cfg.RebuildTimeout.String(), "--settle", "1s")
	cmd.Env = append(os.Environ(), "DATABASE_URL="+r.st.dbURL, "NATS_URL="+r.st.natsURL, "MONGODB_URI="+r.st.mongoURI,
		"ADMIN_ADDR=127.0.0.1:0", "LOG_LEVEL=info")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	rb.Seconds = time.Since(start).Seconds()
	rb.Load1 = load1()
	if err := os.WriteFile(filepath.Join(r.raw, "rebuild.log"), out, 0o644); err != nil {
		r.log.Warn("rebuild log", "error", err)
	}
	if err != nil {
		rb.Error = fmt.Sprintf("%v: %s", err, lastLine(out))
		// What it wrote before the bound: documents, one per aggregate, so fewer than
		// the events applied; their rate is a lower bound of the rebuild's.
		if docs, cerr := r.documents(ctx, target); cerr == nil {
			rb.Documents = docs
			rb.EventsPerS = float64(docs) / rb.Seconds
		}
		r.note("rebuild did not finish within %s: %s; it wrote %d documents (%.0f/s, a lower bound of its event rate)", r.cfg.RebuildTimeout, rb.Error, rb.Documents, rb.EventsPerS)
	} else {
		rb.Complete = true
		// The fill itself, without the settle period after the switch.
		if sec, ok := catchUpSeconds(out); ok {
			rb.Seconds = sec
		}
		rb.EventsPerS = float64(rb.Events) / rb.Seconds
	}
	r.res.Rebuild = rb
	return nil
}

// documents counts the users and todos documents of a read-model database.
func (r *runner) documents(ctx context.Context, database string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var n int64
	for _, c := range []string{readmodel.CollUsers, readmodel.CollTodos} {
		k, err := r.mongo.Database(database).Collection(c).EstimatedDocumentCount(ctx)
		if err != nil {
			return 0, fmt.Errorf("count %s.%s: %w", database, c, err)
		}
		n += k
	}
	return n, nil
}

// catchUpSeconds finds the rebuild's "rebuild caught up" log record and its seconds.
func catchUpSeconds(out []byte) (float64, bool) {
	for _, line := range bytes.Split(out, []byte("\n")) {
		var rec struct {
			Msg     string  `json:"msg"`
			Seconds float64 `json:"seconds"`
		}
		if json.Unmarshal(line, &rec) == nil && rec.Msg == "rebuild caught up" && rec.Seconds > 0 {
			return rec.Seconds, true
		}
	}
	return 0, false
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	var mem string
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		mem = strings.Join(strings.Fields(strings.SplitN(string(b), "\n", 2)[0])[1:], " ")
	}
	return fmt.Sprintf("%d cores (%s), memory %s, %s/%s, %s", runtime.NumCPU(), model, mem, runtime.GOOS, runtime.GOARCH, runtime.Version())
}
