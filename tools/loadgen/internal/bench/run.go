// Package bench runs the whole benchmark against a fresh local stack (bin/devstack on
// databases of its own), as a list of phases: the same-run baselines (pgbench of the
// create transaction, the old synchronous dual write), the API under one and many
// clients with end-to-end lag measured two ways, step searches for the pipeline's
// maximum sustained rate on a small and a large read model (seeded through the normal
// path, see package seed) with lag at half of it and growth at 80% of it, the
// projector on backlogs of its own against the server's raw ceilings (package ceilings),
// several projector replicas sharing the stream (replicas.go), the deletion of a large
// user, and a timed rebuild; then it writes the results.
//
// A phase that fails is recorded as failed with its error and the run goes on with the
// phases that do not need it; Run returns an error at the end if any failed. Every
// phase is bounded, and all of them by Config.Deadline.
package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	sharedpg "github.com/outboxtodo/outboxtodo/shared/postgres"
	"github.com/outboxtodo/outboxtodo/shared/process"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/driver"
	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/procstat"
	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/report"
	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/seed"
)

// runner carries one run's state between its phases.
type runner struct {
	cfg      Config
	log      *slog.Logger
	res      *report.Results
	start    time.Time
	deadline time.Time
	raw      string // directory of bulky outputs (profiles, logs), not committed
	name     string // the run's database, and the prefix of its siblings

	// Set by the stack phase.
	st           *stack
	mongo        *mongo.Client
	pool         *pgxpool.Pool // the services' database, for seeding
	stopSampling func()
	parts        *partitionSet // opened by the first phase that pauses the projector

	clients []*driver.Client
	large   seed.Set // the large seed, completed in part by the update backlog

	mu       sync.Mutex
	timeline []report.Tick
	phase    string
	first    map[string]procstat.Usage // at the end of the warm-up
	last     map[string]procstat.Usage
	peak     map[string]int64
}

// phase is one step of the run. It runs only when every phase it needs succeeded and
// time is left before the deadline, and at most for limit.
type phase struct {
	name  string
	needs []string
	limit time.Duration
	run   func(ctx context.Context) error
}

// Run runs the benchmark and writes results.json, results.md and results.png into
// cfg.ResultsDir, whatever failed on the way.
func Run(ctx context.Context, log *slog.Logger, cfg Config, command string) error {
	log.Info("config", "config", cfg.Masked())
	raw := filepath.Join(cfg.ResultsDir, "raw")
	if err := os.MkdirAll(raw, 0o755); err != nil {
		return fmt.Errorf("results dir: %w", err)
	}
	start := time.Now()
	r := &runner{cfg: cfg, log: log, raw: raw, start: start, deadline: start.Add(cfg.Deadline),
		name: "bench_" + start.UTC().Format("20060102_150405"),
		res:  &report.Results{Started: start.UTC(), Machine: machine(), Command: command},
		peak: map[string]int64{}}
	r.res.Settings = fmt.Sprintf("clients %d, phases %s, baselines %s, steps %s (start %.0f/s ×%.1f, ≤%d), holds %s, mix %d%% complete / %d%% delete / rest create, "+
		"black-box sample 1 in %d polled every %s, read models %d and %d todos (%d per seeded user), update backlog %d, deleted user %d todos, "+
		"projector WRITE_CONCURRENCY %d, ceilings %d docs (batch %d) and %d upserts, "+
		"%d projector replicas under %.0f writes/s of %d users for %s (kill watched %s), replica backlog %d todos, deadline %s",
		cfg.Clients, cfg.Phase, cfg.Baseline, cfg.Step, cfg.StepStart, cfg.StepFactor, cfg.StepMax, cfg.Hold, cfg.CompletePct, cfg.DeletePct,
		cfg.SampleEvery, cfg.Poll, cfg.SmallTodos, cfg.LargeTodos, cfg.TodosPerUser, cfg.UpdateTodos, cfg.DeleteTodos,
		cfg.WriteConcurrency, cfg.CeilingDocs, cfg.CeilingBulk, cfg.CeilingUpserts,
		cfg.Replicas, cfg.ReplicaRate, cfg.ReplicaUsers, cfg.ReplicaLoad, cfg.ReplicaKillBound, cfg.ReplicaBacklog, cfg.Deadline)

	r.runPhases(ctx, r.plan())
	r.teardown(ctx)
	err := r.write()
	if fl := r.res.Failed(); len(fl) > 0 {
		err = errors.Join(err, fmt.Errorf("%d phase(s) failed: %s (see %s)", len(fl), strings.Join(fl, ", "), filepath.Join(cfg.ResultsDir, "results.md")))
	}
	return err
}

// The phases others depend on, and the warm-up, after which CPU and memory growth are
// counted.
const (
	phaseStack  = "start the stack"
	phaseSignUp = "sign-up and warm-up"
	phaseWarmUp = "warm-up"
)

func (r *runner) plan() []phase {
	c := r.cfg
	small, large := fmt.Sprintf("seed to %d todos", c.SmallTodos), fmt.Sprintf("seed to %d todos", c.LargeTodos)
	search := time.Duration(c.StepMax)*(c.Step+c.Drain) + 2*(c.Hold+c.Drain) + time.Minute
	seedLimit := 2*c.ApplyTimeout + c.Drain + time.Minute
	return []phase{
		{phaseStack, nil, 3 * time.Minute, r.startStack},
		{"baselines", []string{phaseStack}, 4*c.Baseline + 2*time.Minute, r.baselines},
		{phaseSignUp, []string{phaseStack}, c.Warmup + c.Drain + time.Minute, r.signUp},
		{small, []string{phaseStack}, seedLimit, func(ctx context.Context) error { return r.seedTo(ctx, c.SmallTodos, nil) }},
		{fmt.Sprintf("step search at %d todos", c.SmallTodos), []string{phaseSignUp, small}, search,
			func(ctx context.Context) error { return r.stepSearch(ctx, fmt.Sprintf("%d todos", c.SmallTodos)) }},
		{large, []string{phaseStack}, seedLimit, func(ctx context.Context) error { return r.seedTo(ctx, c.LargeTodos, &r.large) }},
		{"raw ceilings", []string{phaseStack}, c.Drain + 3*time.Minute, r.ceilings},
		{"update backlog", []string{large}, seedLimit, r.updates},
		{fmt.Sprintf("step search at %d todos", c.LargeTodos), []string{phaseSignUp, large}, search,
			func(ctx context.Context) error { return r.stepSearch(ctx, fmt.Sprintf("%d todos", c.LargeTodos)) }},
		{"api phases", []string{phaseSignUp}, 2*(c.Phase+c.Drain) + c.Profile + time.Minute, r.apiPhases},
		{"projector replicas", []string{phaseStack}, c.ReplicaLoad + c.ReplicaKillBound + 150*time.Second, r.replicas},
		{fmt.Sprintf("delete a user of %d todos", c.DeleteTodos), []string{phaseStack}, c.ApplyTimeout + c.DeleteTimeout + 2*c.Drain + time.Minute, r.deleteUser},
		{"rebuild", []string{phaseStack}, c.RebuildTimeout + c.Drain + time.Minute, r.rebuild},
	}
}

func (r *runner) runPhases(ctx context.Context, phases []phase) {
	ok := map[string]bool{}
	for _, ph := range phases {
		pr := report.PhaseRun{Name: ph.name, Status: report.StatusSkipped}
		var missing []string
		for _, n := range ph.needs {
			if !ok[n] {
				missing = append(missing, n)
			}
		}
		left := time.Until(r.deadline)
		switch {
		case ctx.Err() != nil:
			pr.Error = "interrupted"
		case len(missing) > 0:
			pr.Error = "needs " + strings.Join(missing, ", ") + ", which did not succeed"
		case left <= 0:
			pr.Error = fmt.Sprintf("out of time (LOADGEN_DEADLINE %s)", r.cfg.Deadline)
		default:
			pr = r.runPhase(ctx, ph, min(ph.limit, left))
		}
		ok[ph.name] = pr.Status == report.StatusOK
		r.res.Phases = append(r.res.Phases, pr)
		if pr.Status != report.StatusOK {
			r.log.Warn("phase "+pr.Status, "phase", ph.name, "error", pr.Error)
		}
	}
}

// runPhase runs one phase within limit. A panic is the phase's failure, not the
// run's: the results of the others must still be written.
func (r *runner) runPhase(ctx context.Context, ph phase, limit time.Duration) (pr report.PhaseRun) {
	r.setPhase(ph.name)
	pr = report.PhaseRun{Name: ph.name}
	pctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	start := time.Now()
	defer func() {
		if v := recover(); v != nil {
			pr.Status, pr.Error = report.StatusFailed, fmt.Sprintf("panic: %v", v)
			r.log.Error("phase panicked", "phase", ph.name, "panic", v, "stack", string(debug.Stack()))
		}
		pr.Seconds = time.Since(start).Seconds()
	}()
	err := ph.run(pctx)
	switch {
	case err == nil:
		pr.Status = report.StatusOK
	case errors.Is(pctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil:
		pr.Status, pr.Error = report.StatusFailed, fmt.Sprintf("%v (the phase's bound of %s, or the run's deadline, ran out)", err, limit.Round(time.Second))
	default:
		pr.Status, pr.Error = report.StatusFailed, err.Error()
	}
	return pr
}

// startStack creates the run's databases, starts the stack, connects to its servers
// and starts sampling.
func (r *runner) startStack(ctx context.Context) error {
	if err := onDatabases(ctx, r.cfg.AdminURL, time.Minute, "CREATE DATABASE %s", r.name, r.name+"_pg"); err != nil {
		return err
	}
	logFile, err := os.Create(filepath.Join(r.raw, "devstack.log"))
	if err != nil {
		return fmt.Errorf("devstack log: %w", err)
	}
	st, err := startStack(ctx, r.cfg, r.name, logFile)
	if err != nil {
		logFile.Close()
		return err
	}
	r.st = st
	r.log.Info("stack ready", "processes", st.procs)
	// The stack's log file closes with the stack (see teardown).
	r.st.log = logFile
	// The pool serves the probes of every client and poll reader, and the concurrent
	// raw ceiling's writes in flight (with the pipeline idle).
	mc, err := mongo.Connect(options.Client().ApplyURI(st.mongoURI).SetServerSelectionTimeout(10 * time.Second).
		SetMaxPoolSize(uint64(max(r.cfg.Clients+r.cfg.PollReaders, r.cfg.WriteConcurrency) + 8)))
	if err != nil {
		return fmt.Errorf("connect MongoDB: %w", err)
	}
	r.mongo = mc
	if r.pool, err = sharedpg.Connect(ctx, st.dbURL, sharedpg.PoolConfig{MaxConns: 4, AppName: "loadgen"}); err != nil {
		return err
	}
	sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { r.sample(sctx) })
	r.stopSampling = func() { stop(); wg.Wait() }
	return nil
}

// teardown stops what startStack started, whatever of it did start, and drops the
// run's databases.
func (r *runner) teardown(ctx context.Context) {
	if r.stopSampling != nil {
		r.stopSampling()
	}
	r.finish()
	ctx = context.WithoutCancel(ctx)
	if r.parts != nil {
		r.parts.close()
	}
	if r.pool != nil {
		r.pool.Close()
	}
	if r.mongo != nil {
		_ = r.mongo.Disconnect(ctx)
	}
	if r.st != nil {
		r.st.stop()
	}
	if err := onDatabases(ctx, r.cfg.AdminURL, time.Minute, "DROP DATABASE IF EXISTS %s WITH (FORCE)", r.name, r.name+"_ferretdb", r.name+"_pg"); err != nil {
		r.log.Warn("drop the run's databases", "error", err)
	}
}

func (r *runner) setPhase(p string) {
	r.mu.Lock()
	r.phase = p
	r.mu.Unlock()
	r.log.Info("phase", "name", p, "at", time.Since(r.start).Round(time.Second).String())
}

func (r *runner) note(format string, a ...any) {
	r.mu.Lock()
	r.res.Notes = append(r.res.Notes, fmt.Sprintf(format, a...))
	r.mu.Unlock()
	r.log.Warn("note", "text", fmt.Sprintf(format, a...))
}

// poll calls read once per every until done holds for what it read, for at most bound.
// It returns the last value read without error, whether done held, and the last
// read's error.
func poll[T any](ctx context.Context, bound, every time.Duration, read func(context.Context) (T, error), done func(T) bool) (last T, ok bool, readErr error) {
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		v, err := read(ctx)
		if readErr = err; err == nil {
			if last = v; done(v) {
				return last, true, nil
			}
		}
		select {
		case <-ctx.Done():
			return last, false, readErr
		case <-t.C:
		}
	}
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
	prev := map[string]procstat.Usage{}
	prevAt := time.Now()
	process.Every(ctx, time.Second, func() {
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
	})
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
	if r.st == nil || r.first == nil {
		return
	}
	var warm time.Duration
	for _, t := range r.timeline {
		if t.Phase == phaseWarmUp {
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

// activeDB is the active read-model database.
func (r *runner) activeDB(ctx context.Context) (*mongo.Database, error) {
	db, err := readmodel.NewStore(r.mongo, readmodel.DefaultDatabase).Active(ctx)
	if err != nil {
		return nil, fmt.Errorf("active read model: %w", err)
	}
	return db, nil
}

// todos is the active read model's todos collection.
func (r *runner) todos(ctx context.Context) (*mongo.Collection, error) {
	db, err := r.activeDB(ctx)
	if err != nil {
		return nil, err
	}
	return db.Collection(readmodel.CollTodos), nil
}

// todoCount counts the documents of the active todos collection, tombstones included:
// the size FerretDB works on. FerretDB counts by reading them all, so it is not for
// tight loops.
func (r *runner) todoCount(ctx context.Context) (int64, error) {
	coll, err := r.todos(ctx)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	n, err := coll.EstimatedDocumentCount(ctx)
	if err != nil {
		return 0, fmt.Errorf("count todo documents: %w", err)
	}
	return n, nil
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
