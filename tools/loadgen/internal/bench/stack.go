package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/procstat"
	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/promhist"
)

// stack is the system under test: bin/devstack (which hosts the embedded NATS and
// FerretDB) and the api, publisher and projector it runs, on databases of this run.
type stack struct {
	cmd       *exec.Cmd
	dataDir   string
	dbURL     string // the services' database
	ferretURL string // FerretDB's own PostgreSQL database
	mongoURI  string
	natsURL   string
	apiURL    string
	admin     map[string]string // service -> admin base URL (metrics, pprof)
	procs     map[string]int    // name -> pid
	http      *http.Client
	log       io.Closer // devstack's output, closed by stop
}

// withDatabase is base with its database name replaced.
func withDatabase(base, name string) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("parse database URL: %w", err)
	}
	u.Path = "/" + name
	return u.String(), nil
}

// onDatabases runs stmt, a statement on a database such as "DROP DATABASE %s", once for
// each of names (quoted in place of %s), on one connection to adminURL's server, all
// within timeout. It stops at the first failure.
func onDatabases(ctx context.Context, adminURL string, timeout time.Duration, stmt string, names ...string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("connect admin database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, n := range names {
		if _, err := conn.Exec(ctx, fmt.Sprintf(stmt, pgx.Identifier{n}.Sanitize())); err != nil {
			return fmt.Errorf("%s: %w", fmt.Sprintf(stmt, n), err)
		}
	}
	return nil
}

// startStack runs bin/devstack on the run's database (name, on the server of the admin
// URL) and ports, with the API's rate limits off, and waits until the API answers and
// the three services are found.
func startStack(ctx context.Context, cfg Config, name string, logTo io.Writer) (*stack, error) {
	dbURL, err := withDatabase(cfg.AdminURL, name)
	if err != nil {
		return nil, err
	}
	// devstack keeps FerretDB's data in the sibling database <name>_ferretdb.
	ferretURL, err := withDatabase(cfg.AdminURL, name+"_ferretdb")
	if err != nil {
		return nil, err
	}
	dataDir, err := os.MkdirTemp("", "loadgen-devstack-")
	if err != nil {
		return nil, fmt.Errorf("devstack data dir: %w", err)
	}
	s := &stack{
		dataDir:   dataDir,
		dbURL:     dbURL,
		ferretURL: ferretURL,
		mongoURI:  "mongodb://" + cfg.FerretAddr + "/?directConnection=true",
		natsURL:   "nats://127.0.0.1:" + strconv.Itoa(cfg.NATSPort),
		apiURL:    "http://127.0.0.1:" + strconv.Itoa(cfg.APIPort),
		admin:     map[string]string{},
		http:      &http.Client{Timeout: 5 * time.Second},
	}
	env := append(os.Environ(),
		"DATA_DIR="+dataDir, "BIN_DIR="+cfg.BinDir, "DATABASE_URL="+dbURL,
		"DEVSTACK_NATS_PORT="+strconv.Itoa(cfg.NATSPort), "FERRETDB_ADDR="+cfg.FerretAddr,
		"API_ADDR=127.0.0.1:"+strconv.Itoa(cfg.APIPort),
		"RATE_LIMIT_PER_IP=0", "RATE_LIMIT_PER_TOKEN=0", "LOG_LEVEL=warn",
		// Set, not left to the defaults: the projector's figures, and the raw ceilings
		// beside them, are measured with these values.
		"WRITE_CONCURRENCY="+strconv.Itoa(cfg.WriteConcurrency), "FETCH_WAIT="+cfg.FetchWait.String())
	for i, svc := range []string{"api", "publisher", "projector"} {
		addr := "127.0.0.1:" + strconv.Itoa(cfg.AdminPort+i)
		s.admin[svc] = "http://" + addr
		env = append(env, strings.ToUpper(svc)+"_ADMIN_ADDR="+addr)
	}
	// Not ctx: the stack is stopped with SIGINT by stop, so that it drains.
	s.cmd = exec.Command(filepath.Join(cfg.BinDir, "devstack"))
	s.cmd.Env = env
	s.cmd.Stdout, s.cmd.Stderr = logTo, logTo
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start devstack: %w (run `make build` first)", err)
	}
	if err := s.waitReady(ctx); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

func (s *stack) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		if err := s.ready(ctx); err == nil {
			return nil
		} else if ctx.Err() != nil {
			return fmt.Errorf("stack not ready: %w", err)
		}
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
}

func (s *stack) ready(ctx context.Context) error {
	for _, u := range []string{s.apiURL + "/health/databases", s.admin["api"] + "/metrics", s.admin["publisher"] + "/metrics", s.admin["projector"] + "/metrics"} {
		if _, err := s.get(ctx, u); err != nil {
			return err
		}
	}
	kids, err := procstat.Children(s.cmd.Process.Pid)
	if err != nil {
		return err
	}
	procs := map[string]int{"devstack (NATS + FerretDB)": s.cmd.Process.Pid}
	for _, k := range kids {
		name, err := procstat.Comm(k)
		if err != nil {
			return err
		}
		procs[name] = k
	}
	for _, n := range []string{"api", "publisher", "projector"} {
		if _, ok := procs[n]; !ok {
			return fmt.Errorf("process %s not found among %v", n, procs)
		}
	}
	s.procs = procs
	return nil
}

// get fetches u within the client's timeout (the profiles use a longer one).
func (s *stack) get(ctx context.Context, u string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, s.http.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", u, err)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", u, err)
	}
	// /health/sync answers 503 with its report when an alert fires: still a report.
	if resp.StatusCode != http.StatusOK && !strings.HasSuffix(u, "/health/sync") {
		return nil, fmt.Errorf("get %s: status %d", u, resp.StatusCode)
	}
	return b, nil
}

// syncState is the part of GET /health/sync the run watches.
type syncState struct {
	Outbox *struct {
		Backlog int64 `json:"backlog"`
	} `json:"outbox"`
	Stream *struct {
		Messages uint64 `json:"messages"`
		LastSeq  uint64 `json:"last_seq"`
	} `json:"stream"`
	Consumer *struct {
		Pending    uint64 `json:"pending"`
		AckPending int    `json:"ack_pending"`
	} `json:"consumer"`
	Projection *struct {
		LagSeconds float64 `json:"lag_seconds"`
	} `json:"projection"`
}

// backlog is everything written and not yet in the read model: outbox rows not yet
// published, stream messages not yet delivered, and delivered but unacknowledged.
func (st syncState) backlog() (outbox int64, pending uint64) {
	if st.Outbox != nil {
		outbox = st.Outbox.Backlog
	}
	if st.Consumer != nil {
		pending = st.Consumer.Pending + uint64(st.Consumer.AckPending)
	}
	return outbox, pending
}

func (s *stack) sync(ctx context.Context) (syncState, error) {
	var st syncState
	b, err := s.get(ctx, s.apiURL+"/health/sync")
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("decode /health/sync: %w", err)
	}
	if st.Outbox == nil || st.Consumer == nil || st.Stream == nil {
		return st, fmt.Errorf("/health/sync lacks the outbox, stream or consumer report: %s", b)
	}
	return st, nil
}

// lagHistogram scrapes the projector's own lag histogram.
func (s *stack) lagHistogram(ctx context.Context) (promhist.Histogram, error) {
	b, err := s.get(ctx, s.admin["projector"]+"/metrics")
	if err != nil {
		return promhist.Histogram{}, err
	}
	return promhist.Parse(strings.NewReader(string(b)), "projector_lag_seconds")
}

// stop sends SIGINT to devstack (which stops the services, then its servers) and
// waits for it, killing it after a bound.
func (s *stack) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	done := make(chan struct{})
	go func() {
		_ = s.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(45 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
	if s.log != nil {
		_ = s.log.Close()
	}
	_ = os.RemoveAll(s.dataDir)
}
