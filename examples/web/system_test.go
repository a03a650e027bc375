package web

import (
	"maps"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
	"github.com/outboxtodo/outboxtodo/tools/devstack"
)

// repoRoot is the repository's root: this package is examples/web.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "Makefile")); err != nil {
		t.Fatalf("repository root: %v", err)
	}
	return root
}

// startSystem runs what `make run` runs (bin/devstack: the three services, embedded
// NATS and FerretDB) on ports and databases of the test's own, so that it runs beside a
// developer's stack and other tests; env is added to the services' environment. It
// returns the API's base URL once devstack has printed its ready banner, and stops the
// stack and drops its databases when the test ends.
func startSystem(t *testing.T, env map[string]string) string {
	t.Helper()
	root := repoRoot(t)
	// Not under the stack's deadline: on a cold build cache, beside the rest of the
	// suite compiling, the build alone can take minutes.
	buildCtx := sharedtest.Context(t, 10*time.Minute)
	if b, err := exec.CommandContext(buildCtx, "make", "-C", root, "build").CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, b)
	}

	dbURL := dbtest.NewEmpty(t)
	dropFerretDatabase(t, dbURL)
	overrides, listeners := devstack.TestEnv(t, dbURL)
	overrides["BIN_DIR"] = filepath.Join(root, "bin")
	overrides["LOG_LEVEL"] = "warn"
	maps.Copy(overrides, env)

	out := &sharedtest.LogBuffer{}
	cmd := exec.Command(filepath.Join(root, "bin", "devstack"))
	// Without what would make devstack use outside servers or put the three services
	// on one admin port.
	cmd.Env = sharedtest.Environ(overrides, "NATS_URL", "MONGODB_URI", "ADMIN_ADDR")
	cmd.Stdout, cmd.Stderr = out, out
	// devstack stops its services when it gets SIGINT, and they die with it if it is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("start bin/devstack: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("devstack still running 60s after SIGINT; killed")
		}
		if t.Failed() {
			t.Logf("devstack output:\n%s", out.String())
		}
	})

	sharedtest.Eventually(t, 3*time.Minute, func() (bool, string) {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("devstack exited before it was ready: %v\n%s", err, out.String())
		default:
		}
		return strings.Contains(out.String(), "\nready in "), "devstack printed no ready banner"
	})
	return "http://" + listeners["api"]
}

// dropFerretDatabase drops, when the test ends, the database devstack creates beside
// dbURL's for its embedded FerretDB (<name>_ferretdb).
func dropFerretDatabase(t *testing.T, dbURL string) {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.Trim(u.Path, "/") + "_ferretdb"
	u.Path = "/postgres"
	dbtest.Drop(t, u.String(), name)
}
