// Package sharedtest holds test helpers the modules' tests share. Production code never
// imports it.
package sharedtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// LogBuffer collects log output written from many goroutines (a server's, a child
// process's copier) while a test reads it. The zero value is ready to use.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String is everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Lines decodes the JSON log lines written so far. It returns every line that decodes,
// and an error naming the first that does not.
func (l *LogBuffer) Lines() ([]map[string]any, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var (
		out      []map[string]any
		firstErr error
	)
	for _, line := range bytes.Split(bytes.TrimSpace(l.b.Bytes()), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("log line %q: %w", line, err)
			}
			continue
		}
		out = append(out, m)
	}
	return out, firstErr
}

// Await waits, until ctx ends, for a log line whose msg is msg, and returns its field
// (a string; empty when the line has none).
func (l *LogBuffer) Await(t testing.TB, ctx context.Context, msg, field string) string {
	t.Helper()
	for {
		lines, _ := l.Lines()
		for _, line := range lines {
			if line["msg"] == msg {
				v, _ := line[field].(string)
				return v
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no %q in the logs: %v\n%s", msg, ctx.Err(), l.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Fetch GETs url and returns the body of its 200 answer.
func Fetch(t testing.TB, ctx context.Context, url string) string {
	t.Helper()
	status, body := Request(t, ctx, http.MethodGet, url, nil, nil)
	if status != http.StatusOK {
		t.Fatalf("GET %s: %d %s\n%s", url, status, http.StatusText(status), body)
	}
	return string(body)
}

// Request sends a request of method to url with header and body (each may be nil),
// and returns the answer's status and body whatever the status. It fails t when the
// request cannot be sent or its answer read.
func Request(t testing.TB, ctx context.Context, method, url string, header http.Header, body io.Reader) (int, []byte) {
	t.Helper()
	r, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	maps.Copy(r.Header, header)
	res, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return res.StatusCode, b
}

// FreePorts reserves n distinct loopback ports by listening on each, then frees them
// for a child process to take.
func FreePorts(t testing.TB, n int) []string {
	t.Helper()
	var (
		ports []string
		ls    []net.Listener
	)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("free port: %v", err)
		}
		ls = append(ls, l)
		ports = append(ports, strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
	}
	for _, l := range ls {
		if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			t.Fatal(err)
		}
	}
	return ports
}

// Environ is this process's environment for a child process: overrides replace or add
// variables, and the variables named in drop are left out.
func Environ(overrides map[string]string, drop ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if _, over := overrides[k]; !over && !slices.Contains(drop, k) {
			env = append(env, kv)
		}
	}
	for k, v := range overrides {
		env = append(env, k+"="+v)
	}
	return env
}
