// Package pgserver runs a throwaway PostgreSQL server of the fault runner's own: initdb
// into a temporary directory, then the postgres binary on a free loopback port, so that
// crashing and restarting it disturbs no other database on the machine.
//
// initdb and postgres refuse to run as root. When this process is root (CI), both run
// as the "postgres" OS user, which then owns the data directory.
package pgserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Server is one PostgreSQL server; Start, Crash and Stop may be called in any order.
// Its methods are safe for concurrent use.
type Server struct {
	bin     string
	dataDir string
	logPath string
	port    int
	cred    *syscall.Credential

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// New runs initdb into dir/pgdata (dir must exist and be empty of pgdata) and picks a
// free port. It starts nothing.
func New(ctx context.Context, dir string) (*Server, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	s := &Server{bin: bin, dataDir: filepath.Join(dir, "pgdata"), logPath: filepath.Join(dir, "postgres.log")}
	if os.Geteuid() == 0 {
		if s.cred, err = postgresUser(); err != nil {
			return nil, err
		}
		// The postgres user must reach the data directory through dir.
		if err := os.Chown(dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			return nil, fmt.Errorf("pgserver: chown %s: %w", dir, err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("pgserver: free port: %w", err)
	}
	s.port = ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()

	cmd := s.command(ctx, "initdb", "-D", s.dataDir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("pgserver: initdb: %w: %s", err, out)
	}
	return s, nil
}

// URL is the connection string of database name on this server.
func (s *Server) URL(name string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.port, name)
}

// Start starts a stopped server and waits until it accepts connections.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return nil
	}
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("pgserver: log: %w", err)
	}
	// fsync off: only processes crash here, never the machine, so the page cache keeps
	// every committed write; it spares the other engineers' disk.
	cmd := s.command(context.WithoutCancel(ctx), "postgres", "-D", s.dataDir, "-p", strconv.Itoa(s.port),
		"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="+filepath.Dir(s.dataDir),
		"-c", "fsync=off", "-c", "max_connections=200", "-c", "shared_buffers=64MB")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return fmt.Errorf("pgserver: start postgres: %w", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = cmd.Wait()
		_ = logf.Close()
	}()
	s.cmd, s.done = cmd, done
	return s.waitReady(ctx, done)
}

func (s *Server) waitReady(ctx context.Context, done <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(cctx, s.URL("postgres"))
		if err == nil {
			err = conn.Ping(cctx)
			_ = conn.Close(context.WithoutCancel(cctx))
		}
		ccancel()
		if err == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("pgserver: postgres exited at start (see %s)", s.logPath)
		case <-ctx.Done():
			return fmt.Errorf("pgserver: not ready: %w (last: %v)", ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Crash stops the server the way a crash does: an immediate shutdown (SIGQUIT) that
// kills every backend without a checkpoint, so the next Start runs crash recovery.
func (s *Server) Crash() error { return s.signal(syscall.SIGQUIT) }

// Stop shuts the server down cleanly (fast shutdown: SIGINT).
func (s *Server) Stop() error { return s.signal(syscall.SIGINT) }

func (s *Server) signal(sig syscall.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return nil
	}
	if err := s.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("pgserver: signal postgres: %w", err)
	}
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd, s.done = nil, nil
	return nil
}

func (s *Server) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(s.bin, name), args...)
	// SIGQUIT rather than SIGKILL if this process dies: a killed postmaster leaves its
	// backends holding shared memory.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGQUIT, Credential: s.cred}
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C"}
	return cmd
}

// binDir is the newest /usr/lib/postgresql/<version>/bin holding initdb.
func binDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(dirs) == 0 {
		return "", errors.New("pgserver: no initdb under /usr/lib/postgresql/*/bin")
	}
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) < version(dirs[j]) })
	return filepath.Dir(dirs[len(dirs)-1]), nil
}

func version(initdb string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(initdb))))
	return v
}

func postgresUser() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgserver: running as root needs a postgres OS user: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgserver: uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgserver: gid %q: %w", u.Gid, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}
