// Package runner is the fault run: it starts private PostgreSQL, NATS JetStream and
// FerretDB servers, runs the api, publisher and projector binaries as child processes,
// keeps writes flowing through the API while it kills services and restarts servers,
// then waits for quiet and judges the result (package audit and `todoctl verify`).
package runner

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxtodo/outboxtodo/migrations"
	"github.com/outboxtodo/outboxtodo/shared/postgres"
	"github.com/outboxtodo/outboxtodo/shared/process"
	"github.com/outboxtodo/outboxtodo/tools/chaos/internal/audit"
	"github.com/outboxtodo/outboxtodo/tools/chaos/internal/child"
	"github.com/outboxtodo/outboxtodo/tools/chaos/internal/pgserver"
	"github.com/outboxtodo/outboxtodo/tools/chaos/internal/workload"
	devchild "github.com/outboxtodo/outboxtodo/tools/devstack/child"
	"github.com/outboxtodo/outboxtodo/tools/devstack/ferret"
	"github.com/outboxtodo/outboxtodo/tools/devstack/natsserver"
	"github.com/outboxtodo/outboxtodo/tools/devstack/pgadmin"
)

// The services' defaults, which the runner leaves in place.
const (
	streamName   = "TODO_EVENTS"
	consumerName = "projector"
)

// Config of a run; every field has a default (see the env tags) and Validate checks it.
type Config struct {
	// Duration is how long faults and writes go on.
	Duration time.Duration `env:"CHAOS_DURATION" envDefault:"4m"`
	// KillEvery is the pause between two kills of one service (each service has its
	// own schedule; the replica is picked at random).
	KillEvery time.Duration `env:"CHAOS_KILL_EVERY" envDefault:"9s"`
	// RestartEvery is the pause between two server restarts, round robin over NATS,
	// FerretDB and PostgreSQL.
	RestartEvery time.Duration `env:"CHAOS_RESTART_EVERY" envDefault:"20s"`
	// Downtime is the longest a killed service or a stopped server stays down.
	Downtime     time.Duration `env:"CHAOS_DOWNTIME" envDefault:"2s"`
	Writers      int           `env:"CHAOS_WRITERS" envDefault:"6"`
	WritePause   time.Duration `env:"CHAOS_WRITE_PAUSE" envDefault:"40ms"`
	Publishers   int           `env:"CHAOS_PUBLISHERS" envDefault:"2"`
	Projectors   int           `env:"CHAOS_PROJECTORS" envDefault:"2"`
	QuietTimeout time.Duration `env:"CHAOS_QUIET_TIMEOUT" envDefault:"3m"`
	// WorkDir holds the servers' data, the binaries and every process's log; empty
	// makes a temporary one, removed after a passing run.
	WorkDir string `env:"CHAOS_WORK_DIR"`
	// RepoDir is the workspace root the binaries are built from; empty asks `go env GOWORK`.
	RepoDir string `env:"CHAOS_REPO_DIR"`
}

// Validate reports every invalid field.
func (c Config) Validate() error {
	var errs []error
	for name, d := range map[string]time.Duration{"CHAOS_DURATION": c.Duration, "CHAOS_KILL_EVERY": c.KillEvery,
		"CHAOS_RESTART_EVERY": c.RestartEvery, "CHAOS_DOWNTIME": c.Downtime, "CHAOS_QUIET_TIMEOUT": c.QuietTimeout} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %s", name, d))
		}
	}
	if c.WritePause < 0 {
		errs = append(errs, fmt.Errorf("CHAOS_WRITE_PAUSE must not be negative, got %s", c.WritePause))
	}
	for name, n := range map[string]int{"CHAOS_WRITERS": c.Writers, "CHAOS_PUBLISHERS": c.Publishers, "CHAOS_PROJECTORS": c.Projectors} {
		if n < 1 {
			errs = append(errs, fmt.Errorf("%s must be at least 1, got %d", name, n))
		}
	}
	return errors.Join(errs...)
}

// Report is the outcome of a run.
type Report struct {
	Acked, Failed, Unknown int
	Kills                  map[string]int // per service
	UnexpectedExits        map[string]int // per service: exits the runner did not cause
	Restarts               map[string]int // per server
	Events, StreamMsgs     int
	DeadLetters            int64
	Documents              int64
	Differences            int
	Problems               []string
	WorkDir                string
}

// Pass reports whether every check held.
func (r Report) Pass() bool { return len(r.Problems) == 0 }

// Print writes the counts, the problems first, and the verdict last.
func (r Report) Print(w io.Writer) {
	const shown = 50 // the rest are in the same class; the logs have the details
	for i, p := range r.Problems {
		if i == shown {
			fmt.Fprintf(w, "chaos: ... and %d more problems\n", len(r.Problems)-shown)
			break
		}
		fmt.Fprintln(w, "chaos: problem:", p)
	}
	fmt.Fprintf(w, "chaos: writes acknowledged=%d failed=%d unknown=%d\n", r.Acked, r.Failed, r.Unknown)
	fmt.Fprintf(w, "chaos: kills api=%d publisher=%d projector=%d (exits not caused by the runner: api=%d publisher=%d projector=%d)\n",
		r.Kills["api"], r.Kills["publisher"], r.Kills["projector"], r.UnexpectedExits["api"], r.UnexpectedExits["publisher"], r.UnexpectedExits["projector"])
	fmt.Fprintf(w, "chaos: server restarts nats=%d ferretdb=%d postgresql=%d\n", r.Restarts["nats"], r.Restarts["ferretdb"], r.Restarts["postgresql"])
	fmt.Fprintf(w, "chaos: events outbox=%d stream=%d dead_letters=%d\n", r.Events, r.StreamMsgs, r.DeadLetters)
	fmt.Fprintf(w, "chaos: documents compared=%d differences=%d\n", r.Documents, r.Differences)
	verdict := "PASS"
	if !r.Pass() {
		verdict = fmt.Sprintf("FAIL (%d problems; logs in %s)", len(r.Problems), r.WorkDir)
	}
	fmt.Fprintln(w, "chaos:", verdict)
}

// stack is everything a run started.
type stack struct {
	cfg    Config
	log    *slog.Logger
	dir    string
	pg     *pgserver.Server
	nats   *natsserver.Server
	ferret *ferret.Server
	apiURL string
	procs  map[string][]*child.Proc // by service
	logs   []*os.File
	env    map[string][]string // projector's environment, for verify

	mu       sync.Mutex
	kills    map[string]int
	restarts map[string]int
}

// Run performs one fault run. The error is for a run that could not be carried out;
// a run that found problems returns them in the Report.
func Run(ctx context.Context, cfg Config, log *slog.Logger) (rep Report, err error) {
	if err := cfg.Validate(); err != nil {
		return rep, err
	}
	dir := cfg.WorkDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "chaos-"); err != nil {
			return rep, fmt.Errorf("work dir: %w", err)
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return rep, fmt.Errorf("work dir: %w", err)
	}
	rep.WorkDir = dir
	s := &stack{cfg: cfg, log: log, dir: dir, procs: map[string][]*child.Proc{}, env: map[string][]string{},
		kills: map[string]int{}, restarts: map[string]int{}}
	defer func() {
		s.shutdown()
		if err == nil && rep.Pass() && cfg.WorkDir == "" {
			_ = os.RemoveAll(dir)
		}
	}()
	if err := s.start(ctx); err != nil {
		return rep, err
	}

	ledger := &workload.Ledger{}
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var loadDone sync.WaitGroup
	loadDone.Go(func() {
		workload.Run(loadCtx, workload.Config{APIURL: s.apiURL, Writers: cfg.Writers, UsersPerWriter: 3, Pause: cfg.WritePause, MaxPatches: 30}, ledger)
	})

	log.Info("faults start", "duration", cfg.Duration)
	faultCtx, stopFaults := context.WithTimeout(ctx, cfg.Duration)
	var faults sync.WaitGroup
	for _, svc := range []string{"api", "publisher", "projector"} {
		faults.Go(func() { s.killLoop(faultCtx, svc) })
	}
	faults.Go(func() { s.restartLoop(faultCtx) })
	supCtx, stopSup := context.WithCancel(ctx)
	var sup sync.WaitGroup
	sup.Go(func() { s.supervise(supCtx) })
	faults.Wait()
	stopFaults()
	stopLoad()
	loadDone.Wait()
	log.Info("faults and writes stopped; waiting for quiet")
	if ctx.Err() != nil {
		stopSup()
		sup.Wait()
		return rep, ctx.Err()
	}
	// The supervisor keeps restarting what crashed by itself until the end.
	defer func() { stopSup(); sup.Wait() }()
	if err := s.ensureRunning(); err != nil {
		return rep, err
	}

	rep.Acked, rep.Failed, rep.Unknown = ledger.Counts()
	s.mu.Lock()
	rep.Kills, rep.Restarts = clone(s.kills), clone(s.restarts)
	s.mu.Unlock()
	rep.UnexpectedExits = map[string]int{}
	for svc, ps := range s.procs {
		for _, p := range ps {
			rep.UnexpectedExits[svc] += p.UnexpectedExits()
		}
	}
	return rep, s.judge(ctx, &rep, ledger.Writes())
}

func clone(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// start builds the binaries, starts the servers and every replica, and waits until the
// API answers.
func (s *stack) start(ctx context.Context) error {
	bin, err := s.build(ctx)
	if err != nil {
		return err
	}
	dbURL, ferretURL, err := s.startServers(ctx)
	if err != nil {
		return err
	}
	if err := s.addReplicas(bin, dbURL, ferretURL); err != nil {
		return err
	}
	if err := s.ensureRunning(); err != nil {
		return err
	}
	return devchild.WaitHealthy(ctx, s.apiURL+"/health")
}

// build builds the services' binaries from the workspace into the work dir, and
// returns their folder.
func (s *stack) build(ctx context.Context) (string, error) {
	repo := s.cfg.RepoDir
	if repo == "" {
		out, err := exec.CommandContext(ctx, "go", "env", "GOWORK").Output()
		if err != nil || strings.TrimSpace(string(out)) == "" {
			return "", fmt.Errorf("find the workspace root (set CHAOS_REPO_DIR): %v", err)
		}
		repo = filepath.Dir(strings.TrimSpace(string(out)))
	}
	bin := filepath.Join(s.dir, "bin")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin+"/",
		"./services/api/cmd/api", "./services/api/cmd/todoctl", "./services/publisher/cmd/publisher", "./services/projector/cmd/projector")
	build.Dir = repo
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %w: %s", err, out)
	}
	s.log.Info("binaries built", "dir", bin)
	return bin, nil
}

// startServers starts PostgreSQL with the migrated service database and FerretDB's,
// NATS and FerretDB, and returns the URLs of the two databases.
func (s *stack) startServers(ctx context.Context) (dbURL, ferretURL string, err error) {
	if s.pg, err = pgserver.New(ctx, s.dir); err != nil {
		return "", "", err
	}
	if err := s.pg.Start(ctx); err != nil {
		return "", "", err
	}
	dbURL, ferretURL = s.pg.URL("todo"), s.pg.URL("ferretdb")
	for _, u := range []string{dbURL, ferretURL} {
		if err := pgadmin.EnsureDatabase(ctx, u); err != nil {
			return "", "", err
		}
	}
	if _, err := migrations.Up(ctx, dbURL); err != nil {
		return "", "", fmt.Errorf("migrate: %w", err)
	}
	s.log.Info("postgresql started", "url", dbURL)

	if s.nats, err = natsserver.Start(natsserver.Config{StoreDir: filepath.Join(s.dir, "nats"), Name: "chaos"}); err != nil {
		return "", "", fmt.Errorf("start NATS: %w", err)
	}
	// FerretDB on the runner's own PostgreSQL: a PostgreSQL restart then takes the read
	// side down too, as it would with a shared database server.
	if s.ferret, err = ferret.Start(context.WithoutCancel(ctx), ferret.Config{Addr: "127.0.0.1:0", PostgreSQLURL: ferretURL}); err != nil {
		return "", "", fmt.Errorf("start FerretDB: %w", err)
	}
	s.log.Info("servers started", "nats", s.nats.ClientURL(), "mongodb", s.ferret.URI())
	return dbURL, ferretURL, nil
}

// addReplicas prepares (does not start) the api and every publisher and projector
// replica, each with its admin port and log file in the work dir.
func (s *stack) addReplicas(bin, dbURL, ferretURL string) error {
	common := append(os.Environ(), "DATABASE_URL="+dbURL, "NATS_URL="+s.nats.ClientURL(), "MONGODB_URI="+s.ferret.URI(), "LOG_LEVEL=info")
	apiAddr, err := freeAddr()
	if err != nil {
		return err
	}
	s.apiURL = "http://" + apiAddr
	add := func(svc string, i int, extra ...string) error {
		admin, err := freeAddr()
		if err != nil {
			return err
		}
		name := fmt.Sprintf("%s-%d", svc, i)
		logf, err := os.Create(filepath.Join(s.dir, name+".log"))
		if err != nil {
			return fmt.Errorf("log of %s: %w", name, err)
		}
		s.logs = append(s.logs, logf)
		env := append(append(append([]string(nil), common...), "ADMIN_ADDR="+admin), extra...)
		s.env[svc] = env
		s.procs[svc] = append(s.procs[svc], child.New(name, filepath.Join(bin, svc), env, logf))
		return nil
	}
	if err := add("api", 1, "API_ADDR="+apiAddr, "RATE_LIMIT_PER_IP=0", "RATE_LIMIT_PER_TOKEN=0", "CURSOR_SECRET="+secret()); err != nil {
		return err
	}
	for i := range s.cfg.Publishers {
		// A short lease: a killed replica's partitions move on within seconds.
		if err := add("publisher", i+1, fmt.Sprintf("REPLICA_ID=publisher-%d", i+1), "LEASE_TTL=5s"); err != nil {
			return err
		}
	}
	for i := range s.cfg.Projectors {
		// A short AckWait: a killed replica's messages come back within seconds. The
		// stand-in's PostgreSQL URL lets the projector index FerretDB's tables, as
		// devstack does, so the read side keeps up with the workload.
		if err := add("projector", i+1, "ACK_WAIT=15s", "FERRETDB_POSTGRESQL_URL="+ferretURL); err != nil {
			return err
		}
	}
	return nil
}

// ensureRunning starts every replica that is not running.
func (s *stack) ensureRunning() error {
	for _, ps := range s.procs {
		for _, p := range ps {
			if err := p.Start(); err != nil {
				return err
			}
		}
	}
	return nil
}

// supervise restarts replicas that exited by themselves (as Kubernetes would).
func (s *stack) supervise(ctx context.Context) {
	process.Every(ctx, time.Second, func() {
		if err := s.ensureRunning(); err != nil {
			s.log.Warn("restart after exit", "error", err)
		}
	})
}

// killLoop SIGKILLs a random replica of svc every KillEvery and starts it again after
// a random downtime.
func (s *stack) killLoop(ctx context.Context, svc string) {
	process.Every(ctx, s.cfg.KillEvery, func() {
		ps := s.procs[svc]
		p := ps[mrand.IntN(len(ps))]
		if _, err := p.Kill(); err != nil {
			s.log.Warn("kill", "replica", p.Name, "error", err)
			return
		}
		s.count(s.kills, svc)
		sleep(ctx, randDuration(s.cfg.Downtime))
		if err := p.Start(); err != nil {
			s.log.Warn("start after kill", "replica", p.Name, "error", err)
		}
	})
}

// restartLoop stops and starts one server every RestartEvery, round robin.
func (s *stack) restartLoop(ctx context.Context) {
	servers := []string{"nats", "ferretdb", "postgresql"}
	next := 0
	process.Every(ctx, s.cfg.RestartEvery, func() {
		name := servers[next%len(servers)]
		next++
		down := randDuration(s.cfg.Downtime)
		s.log.Info("restarting server", "server", name, "downtime", down)
		if err := s.restart(ctx, name, down); err != nil {
			s.log.Error("server restart", "server", name, "error", err)
			return
		}
		s.count(s.restarts, name)
	})
}

func (s *stack) restart(ctx context.Context, name string, down time.Duration) error {
	// Not ctx: a server stopped at the end of the run must still come back.
	switch name {
	case "nats":
		s.nats.Stop()
		sleep(ctx, down)
		return s.nats.Restart()
	case "ferretdb":
		if err := s.ferret.Stop(); err != nil {
			return err
		}
		sleep(ctx, down)
		return s.ferret.Start(context.WithoutCancel(ctx))
	default:
		if err := s.pg.Crash(); err != nil {
			return err
		}
		sleep(ctx, down)
		return s.pg.Start(context.WithoutCancel(ctx))
	}
}

func (s *stack) count(m map[string]int, key string) {
	s.mu.Lock()
	m[key]++
	s.mu.Unlock()
}

// judge waits for quiet, then runs every check and fills rep.
func (s *stack) judge(ctx context.Context, rep *Report, writes []workload.Write) error {
	pool, err := postgres.Connect(ctx, s.pg.URL("todo"), postgres.PoolConfig{AppName: "chaos", StatementTimeout: 5 * time.Minute})
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	defer pool.Close()
	nc, err := nats.Connect(s.nats.ClientURL(), nats.Timeout(5*time.Second))
	if err != nil {
		return fmt.Errorf("connect to NATS: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	start := time.Now()
	if q, err := audit.WaitQuiet(ctx, pool, js, streamName, consumerName, s.cfg.QuietTimeout); err != nil {
		rep.Problems = append(rep.Problems, err.Error())
	} else {
		s.log.Info("quiet", "after", time.Since(start).Round(time.Millisecond), "state", q)
	}

	res, err := audit.Check(ctx, pool, js, streamName, writes)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	rep.Events, rep.StreamMsgs = res.Events, res.StreamMsgs
	rep.Problems = append(rep.Problems, res.Problems...)

	if err := pool.QueryRow(ctx, `SELECT 2 * (SELECT count(*) FROM users) + (SELECT count(*) FROM todos)`).Scan(&rep.Documents); err != nil {
		return fmt.Errorf("count documents: %w", err)
	}
	diffs, out, err := s.verify(ctx)
	if err != nil {
		return err
	}
	rep.Differences = diffs
	if diffs > 0 {
		rep.Problems = append(rep.Problems, "verify: "+out)
	}
	if rep.DeadLetters, err = s.deadLetters(ctx); err != nil {
		return err
	}
	if rep.DeadLetters > 0 {
		rep.Problems = append(rep.Problems, fmt.Sprintf("%d dead letters", rep.DeadLetters))
	}
	return nil
}

var differencesLine = regexp.MustCompile(`(?m)^(\d+) differences between`)

// verify runs `todoctl verify`, with the projector's environment (it names every
// store), and returns the number of differences it printed.
func (s *stack) verify(ctx context.Context) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(s.dir, "bin", "todoctl"), "verify")
	cmd.Env = s.env["projector"]
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = io.Discard
	err := cmd.Run()
	text := strings.TrimSpace(out.String())
	if m := differencesLine.FindStringSubmatch(text); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n, text, nil
	}
	if err != nil {
		return 0, text, fmt.Errorf("todoctl verify: %w: %s", err, text)
	}
	if !strings.Contains(text, "are equal") {
		return 0, text, fmt.Errorf("todoctl verify: unexpected output %q", text)
	}
	return 0, text, nil
}

// deadLetters reads the dead-letter count from the API's /health/sync.
func (s *stack) deadLetters(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.apiURL+"/health/sync", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("health/sync: %w", err)
	}
	defer resp.Body.Close()
	var body struct {
		DeadLetters *int64 `json:"dead_letters"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return 0, fmt.Errorf("health/sync: decode: %w", err)
	}
	if body.DeadLetters == nil {
		return 0, errors.New("health/sync: no dead_letters count (read model unreachable?)")
	}
	return *body.DeadLetters, nil
}

func (s *stack) shutdown() {
	var wg sync.WaitGroup
	for _, ps := range s.procs {
		for _, p := range ps {
			wg.Go(func() { _ = p.Stop(10 * time.Second) })
		}
	}
	wg.Wait()
	for _, f := range s.logs {
		_ = f.Close()
	}
	if s.ferret != nil {
		_ = s.ferret.Stop()
	}
	if s.nats != nil {
		s.nats.Shutdown()
	}
	if s.pg != nil {
		if err := s.pg.Stop(); err != nil {
			s.log.Warn("stop postgresql", "error", err)
		}
	}
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func secret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// randDuration is uniform in [max/4, max].
func randDuration(max time.Duration) time.Duration {
	return max/4 + time.Duration(mrand.Int64N(int64(max-max/4)+1))
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
