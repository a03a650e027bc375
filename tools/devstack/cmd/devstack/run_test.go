package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/shared/readmodel/ferretindex"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
	"github.com/outboxtodo/outboxtodo/tools/devstack"
)

// TestMakeRun drives the README's `make run` as a user would: start it, sign up,
// create a todo, complete it, see it on the leaderboard, press Ctrl-C, and find nothing
// left running. Every port is its own, so it runs beside a developer's stack.
func TestMakeRun(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs(filepath.Join("..", "..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "Makefile")); err != nil {
		t.Fatalf("repository root: %v", err)
	}

	dbURL := scratchDatabase(t)
	env, listeners := devstack.TestEnv(t, dbURL)

	// Build first, without the banner's deadline: on a cold build cache, beside the
	// rest of the suite compiling, the build alone can take minutes. `make run` then
	// finds the binaries up to date, and the deadline below measures the start.
	buildCtx := sharedtest.Context(t, 10*time.Minute)
	if b, err := exec.CommandContext(buildCtx, "make", "-C", root, "build").CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, b)
	}

	out := &sharedtest.LogBuffer{}
	cmd := exec.Command("make", "-C", root, "run")
	// Without what would make devstack use outside servers or put the three services
	// on one admin port, or tie the child make to an outer `make test` (its jobserver
	// flags).
	cmd.Env = sharedtest.Environ(env, "NATS_URL", "MONGODB_URI", "ADMIN_ADDR", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group, as a shell gives a foreground job: Ctrl-C reaches the
	// whole group, and the test can tell whether any member survives.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// The services inherit the output pipe: if one outlived the stack, Wait would
	// block on it; this bounds that and reports it as an error.
	cmd.WaitDelay = 10 * time.Second
	started := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start make run: %v", err)
	}
	pgid := cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-exited
		}
		if t.Failed() {
			t.Logf("make run output:\n%s", out.String())
		}
	})

	// A user waits for the banner devstack prints once the API answers.
	sharedtest.Eventually(t, 90*time.Second, func() (bool, string) {
		select {
		case err := <-exited:
			stopped = true
			t.Fatalf("make run exited early: %v", err)
		default:
		}
		return strings.Contains(out.String(), "\nready in "), "no ready banner"
	})
	t.Logf("make run: API ready %s after start (build up to date)", time.Since(started).Round(time.Millisecond))

	api := &client{t: t, base: "http://" + listeners["api"]}
	var signup struct {
		User struct {
			ID string `json:"id"`
		} `json:"user"`
		Token string `json:"token"`
	}
	api.do(http.MethodPost, "/v1/users", "", nil, map[string]any{"email": "ada@example.com", "display_name": "Ada"}, http.StatusCreated, &signup)
	if signup.Token == "" || signup.User.ID == "" {
		t.Fatalf("sign-up answered no user id or token: %+v", signup)
	}
	var todo struct {
		ID      string `json:"id"`
		Version int64  `json:"version"`
	}
	api.do(http.MethodPost, "/v1/todos", signup.Token, nil, map[string]any{"title": "write the outbox"}, http.StatusCreated, &todo)
	api.do(http.MethodPatch, "/v1/todos/"+todo.ID, signup.Token, map[string]string{"If-Match": strconv.Quote(strconv.FormatInt(todo.Version, 10))},
		map[string]any{"completed": true}, http.StatusOK, nil)

	type entry struct {
		UserID    string `json:"user_id"`
		Completed int64  `json:"completed"`
		Total     int64  `json:"total"`
	}
	sharedtest.Eventually(t, 30*time.Second, func() (bool, string) {
		var lb struct {
			Top []entry `json:"top"`
			Me  *entry  `json:"me"`
		}
		api.do(http.MethodGet, "/v1/leaderboard", signup.Token, nil, nil, http.StatusOK, &lb)
		const why = "the user, 1 of 1 todos completed, is not yet both in the leaderboard's top and its me"
		for _, e := range lb.Top {
			if e.UserID == signup.User.ID && e.Completed == 1 && e.Total == 1 {
				return lb.Me != nil && *lb.Me == e, why
			}
		}
		return false, why
	})

	checkFerretBackend(t, dbURL)

	pids := servicePIDs(t, out.String())

	// Ctrl-C.
	if err := syscall.Kill(-pgid, syscall.SIGINT); err != nil {
		t.Fatalf("SIGINT the process group: %v", err)
	}
	select {
	case err := <-exited:
		stopped = true
		// make reports the interrupt as its own failure; what matters is that it
		// ended and did not need the pipe's WaitDelay to give up on a survivor.
		if errors.Is(err, exec.ErrWaitDelay) {
			t.Errorf("make run left a process holding its output: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("make run still running 60s after SIGINT")
	}
	if strings.Contains(out.String(), " exited: ") {
		t.Errorf("a service exited on its own instead of being stopped (see output)")
	}

	if err := syscall.Kill(-pgid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process group %d still has members after make exited (kill -0: %v)", pgid, err)
	}
	for name, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("%s (pid %d) still alive after make exited (kill -0: %v)", name, pid, err)
		}
	}
	for name, addr := range listeners {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			t.Errorf("%s address %s still accepts connections after make exited", name, addr)
		}
	}
}

// scratchDatabase names a PostgreSQL database that does not exist yet (devstack
// creates it, as it does on a first `make run`) and drops it, with the FerretDB
// sibling devstack creates beside it, when the test ends.
func scratchDatabase(t *testing.T) string {
	t.Helper()
	admin := os.Getenv("TEST_DATABASE_URL")
	if admin == "" {
		admin = dbtest.DefaultAdminURL
	}
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatalf("parse admin URL: %v", err)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "makerun_" + hex.EncodeToString(b)
	dbtest.Drop(t, admin, name, name+"_ferretdb")
	u.Path = "/" + name
	q := u.Query()
	q.Set("sslmode", "disable")
	u.RawQuery = q.Encode()
	return u.String()
}

// checkFerretBackend checks the embedded FerretDB's PostgreSQL database: the projector
// gave the read model its GIN indexes (the read model and the control database are
// one database until a rebuild), and new sessions commit asynchronously and plan
// FerretDB's lookups for their values.
func checkFerretBackend(t *testing.T, dbURL string) {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Path += "_ferretdb"
	ctx := sharedtest.Context(t, 30*time.Second)
	conn, err := pgx.Connect(ctx, u.String())
	if err != nil {
		t.Fatalf("connect to FerretDB's database: %v", err)
	}
	defer conn.Close(context.Background())
	var gin int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_indexes WHERE schemaname = 'todo_read' AND indexdef LIKE '% USING gin %'`).Scan(&gin); err != nil {
		t.Fatal(err)
	}
	if want := len(ferretindex.ReadModelFields) + len(ferretindex.ControlFields); gin != want {
		t.Errorf("FerretDB's todo_read has %d GIN indexes, want %d", gin, want)
	}
	for setting, want := range map[string]string{"synchronous_commit": "off", ferretindex.CustomPlans.Name: ferretindex.CustomPlans.Value} {
		var got string
		if err := conn.QueryRow(ctx, `SELECT current_setting($1)`, setting).Scan(&got); err != nil || got != want {
			t.Errorf("FerretDB's database: %s = %q, %v; want %s", setting, got, err, want)
		}
	}
}

var startedRE = regexp.MustCompile(`"msg":"service started".*?"service":"(api|publisher|projector)","pid":(\d+)`)

// servicePIDs reads the children's pids from devstack's "service started" log lines.
func servicePIDs(t *testing.T, log string) map[string]int {
	t.Helper()
	pids := map[string]int{}
	for _, m := range startedRE.FindAllStringSubmatch(log, -1) {
		pid, _ := strconv.Atoi(m[2])
		pids[m[1]] = pid
	}
	for _, name := range []string{"api", "publisher", "projector"} {
		if pids[name] == 0 {
			t.Fatalf("no pid logged for %s", name)
		}
	}
	return pids
}

type client struct {
	t    *testing.T
	base string
}

// do sends one JSON request and decodes the answer into out (when not nil), failing the
// test unless the status is want.
func (c *client) do(method, path, token string, header map[string]string, body any, want int, out any) {
	c.t.Helper()
	h := http.Header{}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			c.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
		h.Set("Content-Type", "application/json")
	}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	for k, v := range header {
		h.Set(k, v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	status, b := sharedtest.Request(c.t, ctx, method, c.base+path, h, rd)
	if status != want {
		c.t.Fatalf("%s %s: status %d, want %d: %s", method, path, status, want, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			c.t.Fatalf("%s %s: decode %s: %v", method, path, b, err)
		}
	}
}
