// Package child runs one replica of a service binary as a child process that the fault
// runner can SIGKILL and start again with the same environment. A child never outlives
// the runner: it gets SIGKILL when the runner dies (Pdeathsig).
package child

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Proc is one replica. Its methods are safe for concurrent use.
type Proc struct {
	Name string // e.g. publisher-2
	path string
	args []string
	env  []string
	log  *os.File

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	// exits counts exits the runner did not cause (crashes of the service itself).
	exits int
}

// New prepares a replica of the binary at path; its output is appended to log, which
// the caller closes after the last Stop.
func New(name, path string, env []string, log *os.File, args ...string) *Proc {
	return &Proc{Name: name, path: path, args: args, env: env, log: log}
}

// Start starts the replica unless it runs.
func (p *Proc) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return nil
	}
	cmd := exec.Command(p.path, p.args...)
	cmd.Env = p.env
	cmd.Stdout, cmd.Stderr = p.log, p.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = cmd.Wait()
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.cmd == cmd {
			// Nobody asked it to stop: a crash of the service, which the runner reports.
			p.exits++
			p.cmd, p.done = nil, nil
		}
	}()
	p.cmd, p.done = cmd, done
	return nil
}

// Kill sends SIGKILL and waits for the exit. It reports whether the replica was running.
func (p *Proc) Kill() (bool, error) { return p.stop(syscall.SIGKILL, 0) }

// Stop sends SIGTERM, waits up to grace for a clean exit, then kills.
func (p *Proc) Stop(grace time.Duration) error {
	_, err := p.stop(syscall.SIGTERM, grace)
	return err
}

func (p *Proc) stop(sig syscall.Signal, grace time.Duration) (bool, error) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.cmd, p.done = nil, nil
	p.mu.Unlock()
	if cmd == nil {
		return false, nil
	}
	if err := cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return true, fmt.Errorf("signal %s: %w", p.Name, err)
	}
	if sig != syscall.SIGKILL {
		select {
		case <-done:
			return true, nil
		case <-time.After(grace):
			_ = cmd.Process.Kill()
		}
	}
	<-done
	return true, nil
}

// UnexpectedExits is how often the replica exited without being asked to.
func (p *Proc) UnexpectedExits() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exits
}

// Running reports whether the replica runs.
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil
}
