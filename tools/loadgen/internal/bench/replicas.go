package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/driver"
	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/procstat"
	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/replicas"
	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/report"
	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/seed"
	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/stats"
)

// replicaPoll is how often the group is looked at while it settles, drains or
// recovers from the kill.
const replicaPoll = 100 * time.Millisecond

// devstackProc is devstack's own process in stack.procs (it hosts NATS and FerretDB).
const devstackProc = "devstack (NATS + FerretDB)"

// replicas is the projector-replicas phase (issue 11's targets): devstack's projector
// and LOADGEN_REPLICAS-1 more started from bin/projector share the stream's partitions.
// It reports each replica's share of the events applied under a steady load, the gap
// until a replica killed with SIGKILL under that load has its partitions applied
// again, and the apply rate of the same backlog drained by all of them and by one.
// The three parts run whatever the others gave; the phase fails if any did.
func (r *runner) replicas(ctx context.Context) error {
	if err := r.drain(ctx); err != nil {
		return fmt.Errorf("before the replicas: %w", err)
	}
	g, err := r.newGroup(ctx)
	if err != nil {
		return err
	}
	defer g.close()
	res := &report.Replicas{Partitions: g.partitions, Replicas: r.cfg.Replicas}
	r.res.Replicas = res
	if g.partitions < r.cfg.Replicas {
		r.note("projector replicas: %d partitions for %d replicas: some replicas are standbys and apply nothing", g.partitions, r.cfg.Replicas)
	}
	signup := driver.New(r.st.apiURL, stats.NewRecorder(), nil, driver.Mix{}, 30*time.Second)
	clients, err := signup.Clients(ctx, r.cfg.ReplicaUsers)
	signup.Close()
	if err != nil {
		return fmt.Errorf("sign up the replicas' users: %w", err)
	}
	var errs []error
	if err := r.replicaShare(ctx, g, clients, res); err != nil {
		errs = append(errs, fmt.Errorf("share: %w", err))
	}
	if err := r.replicaKill(ctx, g, clients, res); err != nil {
		errs = append(errs, fmt.Errorf("kill: %w", err))
	}
	if err := r.replicaRates(ctx, g, res); err != nil {
		errs = append(errs, fmt.Errorf("apply rates: %w", err))
	}
	return errors.Join(errs...)
}

// replica is one projector process of the phase.
type replica struct {
	name  string
	pid   int
	admin string // base URL of its admin listener
	// cmd is nil for devstack's projector, which the phase never stops: devstack takes
	// the whole stack down when one of its services exits.
	cmd  *exec.Cmd
	done chan struct{} // closed once cmd has been waited for
	log  *os.File
}

// group is the phase's replicas and the broker state they share (the extra replicas
// get the environment of devstack's projector, with an admin address of their own).
// It owns the replicas it starts: close stops them.
type group struct {
	r *runner
	*partitionSet
	kv      jetstream.KeyValue // the membership bucket (claims c.p<i>)
	live    []*replica         // devstack's first
	started int
}

func (r *runner) newGroup(ctx context.Context) (*group, error) {
	p, err := r.streamPartitions(ctx)
	if err != nil {
		return nil, err
	}
	g := &group{r: r, partitionSet: p,
		live: []*replica{{name: "projector", pid: r.st.procs["projector"], admin: r.st.admin["projector"]}}}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	bucket := envValue(p.env, "MEMBERS_BUCKET", "projector-members")
	if g.kv, err = p.js.KeyValue(ctx, bucket); err != nil {
		return nil, fmt.Errorf("membership bucket %s: %w", bucket, err)
	}
	return g, nil
}

// environ splits the text of /proc/<pid>/environ.
func environ(b []byte) []string {
	var out []string
	for _, kv := range bytes.Split(b, []byte{0}) {
		if len(kv) > 0 {
			out = append(out, string(kv))
		}
	}
	return out
}

// envValue is key's value in env (the last one, as exec takes it), or def.
func envValue(env []string, key, def string) string {
	for _, kv := range slices.Backward(env) {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			return v
		}
	}
	return def
}

// start runs one more replica: bin/projector with devstack's environment and an
// admin listener of its own (AdminPort+3 for the second replica, and on).
func (g *group) start() (*replica, error) {
	g.started++
	n := g.started + 1
	name := fmt.Sprintf("projector-%d", n)
	addr := "127.0.0.1:" + strconv.Itoa(g.r.cfg.AdminPort+1+n)
	logf, err := os.Create(filepath.Join(g.r.raw, name+".log"))
	if err != nil {
		return nil, fmt.Errorf("%s log: %w", name, err)
	}
	cmd := exec.Command(filepath.Join(g.r.cfg.BinDir, "projector"))
	// exec keeps the last of duplicate keys: this ADMIN_ADDR replaces devstack's.
	cmd.Env = append(slices.Clip(g.env), "ADMIN_ADDR="+addr)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	rep := &replica{name: name, pid: cmd.Process.Pid, admin: "http://" + addr, cmd: cmd, done: make(chan struct{}), log: logf}
	go func() {
		_ = rep.cmd.Wait()
		close(rep.done)
	}()
	g.live = append(g.live, rep)
	g.r.log.Info("projector replica started", "name", name, "pid", rep.pid, "admin", addr)
	return rep, nil
}

// stopTimeout bounds a replica's exit after SIGTERM: the projector's SHUTDOWN_TIMEOUT
// (20s) and its hand-over.
const stopTimeout = 30 * time.Second

// stop ends a replica the phase started: SIGTERM, so that it hands its partitions
// over, or SIGKILL (kill) when sig says so; then it waits for the exit.
func (g *group) stop(rep *replica, sig syscall.Signal) {
	if rep.cmd == nil {
		return
	}
	_ = rep.cmd.Process.Signal(sig)
	select {
	case <-rep.done:
	case <-time.After(stopTimeout):
		g.r.log.Warn("projector replica did not stop: killed", "name", rep.name)
		_ = rep.cmd.Process.Kill()
		<-rep.done
	}
	_ = rep.log.Close()
	g.live = slices.DeleteFunc(g.live, func(x *replica) bool { return x == rep })
}

// close stops every replica the phase started.
func (g *group) close() {
	for _, rep := range slices.Clone(g.live) {
		g.stop(rep, syscall.SIGTERM)
	}
}

func (g *group) scrape(ctx context.Context, rep *replica) (replicas.Scrape, error) {
	b, err := g.r.st.get(ctx, rep.admin+"/metrics")
	if err != nil {
		return replicas.Scrape{}, err
	}
	s, err := replicas.Parse(bytes.NewReader(b))
	if err != nil {
		return s, fmt.Errorf("%s: %w", rep.name, err)
	}
	return s, nil
}

// waitBalanced waits until the live replicas hold the shares of the partitions the
// projector's assignment gives them (see replicas.Balanced), and have for two
// seconds: a replica retries a claim at every heartbeat (MEMBER_TTL/3, 1 s by
// default), so a hand-over still under way shows within that.
func (g *group) waitBalanced(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	t := time.NewTicker(replicaPoll)
	defer t.Stop()
	var since time.Time
	var last []float64
	for {
		if err := g.exited(); err != nil {
			return err
		}
		held, err := g.held(ctx)
		switch {
		case err != nil || !replicas.Balanced(held, g.partitions):
			since = time.Time{}
		case since.IsZero():
			since = time.Now()
		case time.Since(since) >= 2*time.Second:
			return nil
		}
		if err == nil {
			last = held
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d replicas did not share %d partitions within a minute (held %v; last error %v)", len(g.live), g.partitions, last, err)
		case <-t.C:
		}
	}
}

// exited names a replica the phase started that has exited by itself (a projector
// that fails at start, such as on a read model that does not answer, exits).
func (g *group) exited() error {
	for _, rep := range g.live {
		if rep.cmd == nil {
			continue
		}
		select {
		case <-rep.done:
			return fmt.Errorf("%s exited (%v): see %s", rep.name, rep.cmd.ProcessState, filepath.Join(g.r.raw, rep.name+".log"))
		default:
		}
	}
	return nil
}

// held is the partitions each live replica holds, in g.live's order.
func (g *group) held(ctx context.Context) ([]float64, error) {
	out := make([]float64, len(g.live))
	for i, rep := range g.live {
		s, err := g.scrape(ctx, rep)
		if err != nil {
			return nil, err
		}
		out[i] = s.Held
	}
	return out, nil
}

// cpu reads the CPU time of the live replicas and, with devstack, of devstack's
// process.
func (g *group) cpu(devstack bool) map[string]time.Duration {
	out := map[string]time.Duration{}
	procs := map[string]int{}
	for _, rep := range g.live {
		procs[rep.name] = rep.pid
	}
	if devstack {
		procs[devstackProc] = g.r.st.procs[devstackProc]
	}
	for name, pid := range procs {
		if u, err := procstat.Read(pid); err == nil {
			out[name] = u.CPU
		}
	}
	return out
}

// cpuDelta is each process's CPU seconds between two readings, in name order.
func cpuDelta(before, after map[string]time.Duration) []report.ProcCPU {
	var out []report.ProcCPU
	for _, name := range slices.Sorted(maps.Keys(after)) {
		if b, ok := before[name]; ok {
			out = append(out, report.ProcCPU{Name: name, CPUSeconds: (after[name] - b).Seconds()})
		}
	}
	return out
}

// openLoop writes rate writes/s through the API from clients until ctx ends, and
// returns the rate the API took and the sends missed.
func (r *runner) openLoop(ctx context.Context, clients []*driver.Client, rate float64) (achieved float64, missed int) {
	rec := stats.NewRecorder()
	drv := driver.New(r.st.apiURL, rec, nil, driver.Mix{CompletePct: r.cfg.CompletePct, DeletePct: r.cfg.DeletePct}, 30*time.Second)
	defer drv.Close()
	start := time.Now()
	_, missed = drv.OpenLoop(ctx, clients, rate)
	for _, s := range rec.Routes(time.Since(start)) {
		achieved += s.RPS
	}
	return achieved, missed
}

// replicaRate is the steady load of the share and the kill: LOADGEN_REPLICA_RATE, but
// no more than half the lowest maximum sustained rate the step searches found, so
// that the load is one the pipeline keeps up with on this machine and the figures
// are the replicas', not a backlog's.
func (r *runner) replicaRate() float64 {
	rate := r.cfg.ReplicaRate
	for _, s := range r.res.Searches {
		if s.MaxRate > 0 {
			rate = min(rate, s.MaxRate/2)
		}
	}
	return rate
}

// replicaShare runs the steady load and counts each replica's applied events over it
// and the drain after it.
func (r *runner) replicaShare(ctx context.Context, g *group, clients []*driver.Client, res *report.Replicas) error {
	if err := g.grow(ctx, r.cfg.Replicas); err != nil {
		return err
	}
	before := make([]replicas.Scrape, len(g.live))
	for i, rep := range g.live {
		var err error
		if before[i], err = g.scrape(ctx, rep); err != nil {
			return err
		}
	}
	cpu0 := g.cpu(false)
	r.setPhase("projector replicas: share")
	lctx, cancel := context.WithTimeout(ctx, r.cfg.ReplicaLoad)
	start := time.Now()
	achieved, missed := r.openLoop(lctx, clients, r.replicaRate())
	cancel()
	sh := &report.ReplicaShare{Seconds: time.Since(start).Seconds(), Users: len(clients), Rate: r.replicaRate(), Achieved: achieved, Missed: missed, Load1: load1()}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err := r.drain(ctx); err != nil {
		r.note("projector replicas, share: %v; the shares count only what was applied within the bound", err)
	}
	cpu1 := g.cpu(false)
	deltas := make([]float64, len(g.live))
	for i, rep := range g.live {
		s, err := g.scrape(ctx, rep)
		if err != nil {
			return err
		}
		deltas[i] = s.Applied - before[i].Applied
		sh.Applied = append(sh.Applied, report.ReplicaApplied{Name: rep.name, PID: rep.pid, Held: s.Held, Applied: deltas[i],
			CPUSeconds: (cpu1[rep.name] - cpu0[rep.name]).Seconds()})
	}
	shares, lowest := replicas.Shares(deltas)
	if math.IsNaN(lowest) {
		return errors.New("no replica applied an event")
	}
	for i := range shares {
		sh.Applied[i].Share = shares[i]
	}
	sh.Lowest = lowest
	res.Share = sh
	r.log.Info("projector replicas share", "applied", deltas, "lowest", lowest, "achieved", math.Round(achieved))
	return nil
}

// grow starts replicas until n are live, and waits until they share the partitions.
func (g *group) grow(ctx context.Context, n int) error {
	for len(g.live) < n {
		if _, err := g.start(); err != nil {
			return err
		}
	}
	return g.waitBalanced(ctx)
}

// killSettle is how long the load runs before the kill, so that every replica is
// applying when it happens.
const killSettle = 3 * time.Second

// replicaKill kills the last replica started with SIGKILL under the steady load and
// polls the survivors and the broker until the partitions that changed holder are
// being applied again (or LOADGEN_REPLICA_KILL_BOUND ran out).
func (r *runner) replicaKill(ctx context.Context, g *group, clients []*driver.Client, res *report.Replicas) error {
	if err := g.grow(ctx, r.cfg.Replicas); err != nil {
		return err
	}
	if err := r.drain(ctx); err != nil {
		r.note("projector replicas, kill: it starts on a backlog (%v): the gap includes the new holders' wait behind it", err)
	}
	victim := g.live[len(g.live)-1]
	vs, err := g.scrape(ctx, victim)
	if err != nil {
		return err
	}
	r.setPhase("projector replicas: kill -9")
	lctx, stopLoad := context.WithCancel(ctx)
	var load sync.WaitGroup
	defer func() { stopLoad(); load.Wait() }()
	load.Go(func() { r.openLoop(lctx, clients, r.replicaRate()) })
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(killSettle):
	}
	survivors := slices.Clone(g.live[:len(g.live)-1])
	before, err := g.poll(ctx, survivors)
	if err != nil {
		return fmt.Errorf("before the kill: %w", err)
	}
	if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill %s: %w", victim.name, err)
	}
	killed := time.Now()
	g.stop(victim, syscall.SIGKILL) // waits for the exit; the signal is the one sent above
	k := &report.ReplicaKill{Victim: victim.name, VictimHeld: vs.Held, Rate: r.replicaRate(), PollMS: float64(replicaPoll.Milliseconds())}
	res.Kill = k
	polls, err := r.watchRecovery(ctx, g, survivors, before, killed, k)
	if err != nil {
		return err
	}
	k.Load1 = load1()
	if len(polls) == 0 {
		return errors.New("no poll succeeded after the kill")
	}
	gap := replicas.Analyse(before, polls, g.partitions)
	k.Moved, k.Resumed, k.GapSec = gap.Moved, gap.ResumedOK && len(gap.Moved) > 0, gap.Worst.Seconds()
	for _, d := range gap.Resumed {
		k.ResumedSec = append(k.ResumedSec, d.Seconds())
	}
	k.Held, k.HeldSec = gap.HeldOK, gap.HeldAfter.Seconds()
	if !k.Resumed {
		r.note("projector replicas, kill: the killed replica's partitions were not all applied again within LOADGEN_REPLICA_KILL_BOUND %s", r.cfg.ReplicaKillBound)
	}
	r.log.Info("projector replica killed", "victim", victim.name, "gap_sec", k.GapSec, "resumed", k.Resumed, "held_sec", k.HeldSec, "moved", k.Moved)
	stopLoad()
	load.Wait()
	if err := r.drain(ctx); err != nil {
		r.note("projector replicas, after the kill: %v", err)
	}
	return nil
}

// watchRecovery polls the survivors every replicaPoll from killed until the partitions
// that changed holder are being applied again, or LOADGEN_REPLICA_KILL_BOUND ran out,
// and returns the polls that succeeded; k gets the longest poll's time.
func (r *runner) watchRecovery(ctx context.Context, g *group, survivors []*replica, before replicas.Poll, killed time.Time, k *report.ReplicaKill) ([]replicas.Poll, error) {
	var polls []replicas.Poll
	var doneAt time.Time
	t := time.NewTicker(replicaPoll)
	defer t.Stop()
	// Once recovered the polls go on for a second, for partitions the survivors pass
	// between them after the first hand-over.
	for time.Since(killed) < r.cfg.ReplicaKillBound && (doneAt.IsZero() || time.Since(doneAt) < time.Second) {
		pollStart := time.Now()
		p, err := g.poll(ctx, survivors)
		if err == nil {
			// At the poll's end: a change it saw happened before, by up to its duration.
			p.At = time.Since(killed)
			polls = append(polls, p)
			k.PollMaxMS = max(k.PollMaxMS, float64(time.Since(pollStart).Microseconds())/1000)
		} else if ctx.Err() == nil {
			r.log.Warn("poll after the kill", "error", err)
		}
		if doneAt.IsZero() && replicas.Done(before, polls, g.partitions) {
			doneAt = time.Now()
		}
		select {
		case <-ctx.Done():
			return polls, ctx.Err()
		case <-t.C:
		}
	}
	return polls, nil
}

// poll reads the survivors' partitions held, each partition's claim and how many of
// its messages were acknowledged: delivered less pending acknowledgement (a
// redelivery, after ACK_WAIT, would count as one more).
func (g *group) poll(ctx context.Context, survivors []*replica) (replicas.Poll, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	p := replicas.Poll{Holders: make([]string, g.partitions), Acked: make([]uint64, g.partitions)}
	for _, rep := range survivors {
		s, err := g.scrape(ctx, rep)
		if err != nil {
			return p, err
		}
		p.Held += s.Held
	}
	for i := range g.partitions {
		e, err := g.kv.Get(ctx, fmt.Sprintf("c.p%d", i))
		switch {
		case err == nil:
			p.Holders[i] = string(e.Value())
		case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		default:
			return p, fmt.Errorf("claim of partition %d: %w", i, err)
		}
	}
	err := g.consumers(ctx, func(i int, ci *jetstream.ConsumerInfo) {
		p.Acked[i] = ci.Delivered.Consumer - uint64(ci.NumAckPending)
	})
	return p, err
}

// replicaRates drains the same backlog shape with every replica, then with
// devstack's alone.
func (r *runner) replicaRates(ctx context.Context, g *group, res *report.Replicas) error {
	if err := g.grow(ctx, r.cfg.Replicas); err != nil {
		return err
	}
	r.setPhase(fmt.Sprintf("projector replicas: backlog, %d replicas", len(g.live)))
	many, err := r.replicaBacklog(ctx, g)
	if many != nil {
		res.Rates = append(res.Rates, many)
	}
	if err != nil {
		return fmt.Errorf("%d replicas: %w", r.cfg.Replicas, err)
	}
	for len(g.live) > 1 {
		g.stop(g.live[len(g.live)-1], syscall.SIGTERM)
	}
	if err := g.waitBalanced(ctx); err != nil {
		return err
	}
	r.setPhase("projector replicas: backlog, 1 replica")
	one, err := r.replicaBacklog(ctx, g)
	if one != nil {
		res.Rates = append(res.Rates, one)
	}
	if err != nil {
		return fmt.Errorf("1 replica: %w", err)
	}
	r.log.Info("projector replicas apply rates", "many", many.EventsPerSec, "one", one.EventsPerSec)
	return nil
}

// replicaBacklog times the live replicas on a backlog of LOADGEN_REPLICA_BACKLOG todos
// (users of LOADGEN_TODOS_PER_USER) in paused durables (see pausedBacklog), with the
// CPU of each replica and of devstack's process over the drain.
func (r *runner) replicaBacklog(ctx context.Context, g *group) (*report.ReplicaRate, error) {
	if err := r.drain(ctx); err != nil {
		return nil, fmt.Errorf("before the backlog: %w", err)
	}
	docs, err := r.todoCount(ctx)
	if err != nil {
		return nil, err
	}
	per := r.cfg.TodosPerUser
	plan := seed.Plan{Users: (r.cfg.ReplicaBacklog + per - 1) / per, PerUser: per, CompletedEvery: 4, UsersPerTx: max(1, 10000/per)}
	x := &report.ReplicaRate{Replicas: len(g.live), DocsBefore: docs,
		Backlog: fmt.Sprintf("%d seeded users of %d todos (user.created, todo.created)", plan.Users, plan.PerUser)}
	var cpu0 map[string]time.Duration
	bt, err := r.pausedBacklog(ctx, r.cfg.Drain, func(ctx context.Context) (int, error) {
		set, err := seed.Create(ctx, r.pool, plan)
		return len(set.Users) + len(set.Todos), err
	}, func() { cpu0 = g.cpu(true) })
	x.Events, x.Pending = bt.events, bt.pending
	if err != nil {
		if bt.resumed {
			return x, err
		}
		return nil, err
	}
	x.CPU = cpuDelta(cpu0, g.cpu(true))
	x.Seconds, x.EventsPerSec, x.Load1 = bt.apply.Seconds(), float64(x.Events)/bt.apply.Seconds(), load1()
	return x, nil
}
