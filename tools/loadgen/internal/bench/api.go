package bench

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/outboxtodo/outboxtodo/migrations"
	sharedpg "github.com/outboxtodo/outboxtodo/shared/postgres"
	"github.com/outboxtodo/outboxtodo/shared/readmodel/ferretindex"
	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/baseline"
	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/driver"
	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/pgbench"
	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/report"
	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/stats"
	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/steps"
)

// baselines measures pgbench and the synchronous dual write while the stack idles,
// pgbench on a database of its own.
func (r *runner) baselines(ctx context.Context) error {
	pgURL, err := withDatabase(r.cfg.AdminURL, r.name+"_pg")
	if err != nil {
		return err
	}
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
		res, err := pgbench.Run(ctx, pgURL, c, r.cfg.Baseline, r.raw)
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
	// The same indexes as the read model's: without them every upsert of the dual
	// write would scan its collection on FerretDB, a handicap the pipeline does not have.
	ictx, cancel := context.WithTimeout(ctx, time.Minute)
	_, err = ferretindex.Ensure(ictx, r.st.ferretURL, db, db)
	cancel()
	if err != nil {
		return fmt.Errorf("indexes of the dual write's collection: %w", err)
	}
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

// signUp makes the API's clients and warms the stack up with them.
func (r *runner) signUp(ctx context.Context) error {
	signup := driver.New(r.st.apiURL, stats.NewRecorder(), nil, driver.Mix{}, 30*time.Second)
	clients, err := signup.Clients(ctx, r.cfg.Clients)
	signup.Close()
	if err != nil {
		return err
	}
	r.clients = clients
	if _, err := r.load(ctx, phaseWarmUp, clients, 0, r.cfg.Warmup, phaseOpts{}); err != nil {
		return err
	}
	r.markWarm()
	return nil
}

// apiPhases drives the API closed-loop with one client, then with all of them, with
// the whole pipeline running.
func (r *runner) apiPhases(ctx context.Context) error {
	var err error
	if r.res.API1, err = r.load(ctx, "api 1 client", r.clients[:1], 0, r.cfg.Phase, phaseOpts{probe: true}); err != nil {
		return err
	}
	r.res.APIC, err = r.load(ctx, fmt.Sprintf("api %d clients", len(r.clients)), r.clients, 0, r.cfg.Phase, phaseOpts{profile: true})
	return err
}

// phaseOpts say what runs beside a phase's load.
type phaseOpts struct {
	profile bool // CPU profiles of the services, and PostgreSQL's (pgwaits.go)
	// probe runs the black-box lag reader. Its reads are a load of their own on the
	// MongoDB-protocol server, so the many-client phase, whose figures are the API's,
	// runs without it.
	probe bool
}

// load runs one API phase: closed loop over clients when rate is 0, else open loop at
// rate. It then waits for the pipeline to drain, so that the lag of every sampled
// write, and the projector's histogram of this phase's events, are complete.
func (r *runner) load(ctx context.Context, name string, clients []*driver.Client, rate float64, d time.Duration, opts phaseOpts) (*report.Phase, error) {
	r.setPhase(name)
	var watch *driver.Watcher
	var probe, profiling sync.WaitGroup
	// The probe ends with ctx or with this phase, whichever is first; the profiles
	// run to their end, bounded by their own timeout.
	bctx, stopProbe := context.WithCancel(ctx)
	defer func() { stopProbe(); probe.Wait(); profiling.Wait() }()
	if opts.probe {
		coll, err := r.todos(ctx)
		if err != nil {
			return nil, err
		}
		watch = driver.NewWatcher(coll, r.cfg.SampleEvery, r.cfg.Poll, r.cfg.PollReaders, r.log)
		probe.Go(func() { watch.Run(bctx) })
	}

	h0, err := r.st.lagHistogram(ctx)
	if err != nil {
		return nil, err
	}
	rec := stats.NewRecorder()
	drv := driver.New(r.st.apiURL, rec, watch, driver.Mix{CompletePct: r.cfg.CompletePct, DeletePct: r.cfg.DeletePct}, 30*time.Second)
	defer drv.Close()
	if opts.profile {
		profiling.Go(func() { r.profiles(ctx) })
	}
	ph := &report.Phase{Name: name, Clients: len(clients), Rate: rate, StartedSec: time.Since(r.start).Seconds()}
	start := time.Now()
	pctx, cancel := context.WithTimeout(ctx, d)
	if opts.profile {
		profiling.Go(func() { r.pgProfile(pctx, ctx, name) })
	}
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
		// A few more polls, so that the last writes are seen by the probe.
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

// drain waits, up to LOADGEN_DRAIN_TIMEOUT, until nothing is left between the outbox
// and the read model.
func (r *runner) drain(ctx context.Context) error {
	return r.waitSync(ctx, "pipeline drained", r.cfg.Drain, 250*time.Millisecond, func(s syncState) bool {
		o, p := s.backlog()
		return o == 0 && p == 0
	})
}

// waitSync polls /health/sync every interval until done holds, for at most bound.
func (r *runner) waitSync(ctx context.Context, what string, bound, every time.Duration, done func(syncState) bool) error {
	if last, ok, _ := poll(ctx, bound, every, r.st.sync, done); !ok {
		o, p := last.backlog()
		return fmt.Errorf("not %s within %s (outbox %d, stream pending %d)", what, bound, o, p)
	}
	return nil
}

// profiles takes a CPU profile of each service during the many-client phase and saves
// its top functions beside the results.
func (r *runner) profiles(ctx context.Context) {
	var wg sync.WaitGroup
	for name, admin := range r.st.admin {
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
