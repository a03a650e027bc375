// Package child runs a service binary as a child process, as `make run` (devstack)
// and the system tests do: the child is stopped with SIGTERM when its context ends
// and killed if its parent dies first, so that nothing outlives the stack or the test;
// WaitHealthy waits until it answers on a health endpoint.
package child

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"syscall"
	"time"
)

// Command prepares the binary at path to run with the environment env (KEY=value
// entries), writing to stdout and stderr. It gets SIGTERM when ctx ends and up to 25s
// to drain before SIGKILL, and SIGKILL at once if this process dies first. Once ctx
// ended, Wait returns an error even when the child then exited 0: its exit status is
// in ProcessState.
func Command(ctx context.Context, path string, env []string, stdout, stderr io.Writer) *exec.Cmd {
	cmd := exec.CommandContext(ctx, path)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 25 * time.Second
	return cmd
}

// WaitHealthy polls url every 200ms until it answers 200 OK. It gives up when ctx ends
// or after a minute, and says so with the last answer or error.
func WaitHealthy(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w (last: %v)", url, ctx.Err(), last)
		case <-t.C:
		}
	}
}
