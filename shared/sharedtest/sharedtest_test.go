package sharedtest_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

func TestLogBuffer(t *testing.T) {
	t.Parallel()
	var buf sharedtest.LogBuffer
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() { fmt.Fprintf(&buf, "{\"n\":%d}\n", i) })
	}
	wg.Wait()
	lines, err := buf.Lines()
	if err != nil || len(lines) != 20 {
		t.Fatalf("Lines = %d lines, %v; want 20, nil", len(lines), err)
	}
	fmt.Fprintln(&buf, "not json")
	lines, err = buf.Lines()
	if err == nil || len(lines) != 20 {
		t.Fatalf("with a bad line: %d lines, err %v; want 20 and an error", len(lines), err)
	}
}

func TestEventually(t *testing.T) {
	n := 0
	sharedtest.Eventually(t, time.Second, func() (bool, string) {
		n++
		return n == 3, "not yet"
	})
	if n != 3 {
		t.Fatalf("cond ran %d times, want 3", n)
	}
}

func TestLoggerDropsLinesAfterTheTest(t *testing.T) {
	var log *slog.Logger
	t.Run("inner", func(t *testing.T) {
		log = sharedtest.Logger(t, slog.LevelInfo)
		log.Info("during the test")
	})
	log.Info("after the test") // would fail the run if it reached the ended t.Log
}

func TestEnviron(t *testing.T) {
	t.Setenv("SHAREDTEST_KEPT", "kept")
	t.Setenv("SHAREDTEST_DROPPED", "dropped")
	t.Setenv("SHAREDTEST_OVERRIDDEN", "old")
	env := sharedtest.Environ(map[string]string{"SHAREDTEST_OVERRIDDEN": "new", "SHAREDTEST_ADDED": "added"}, "SHAREDTEST_DROPPED")
	got := map[string][]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		got[k] = append(got[k], v)
	}
	for k, want := range map[string][]string{"SHAREDTEST_KEPT": {"kept"}, "SHAREDTEST_DROPPED": nil, "SHAREDTEST_OVERRIDDEN": {"new"}, "SHAREDTEST_ADDED": {"added"}} {
		if !slices.Equal(got[k], want) {
			t.Errorf("%s = %q, want %q", k, got[k], want)
		}
	}
}

func TestFreePorts(t *testing.T) {
	t.Parallel()
	ports := sharedtest.FreePorts(t, 3)
	if len(ports) != 3 || ports[0] == ports[1] || ports[1] == ports[2] || ports[0] == ports[2] {
		t.Fatalf("FreePorts(3) = %v, want 3 distinct ports", ports)
	}
	l, err := net.Listen("tcp", "127.0.0.1:"+ports[0])
	if err != nil {
		t.Fatalf("port %s not free: %v", ports[0], err)
	}
	l.Close()
}

func TestRequest(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.WriteHeader(http.StatusTeapot)
		fmt.Fprintf(w, "%s %s %s", r.Method, r.Header.Get("X-Test"), b)
	}))
	t.Cleanup(srv.Close)
	status, body := sharedtest.Request(t, context.Background(), http.MethodPut, srv.URL, http.Header{"X-Test": {"h"}}, strings.NewReader("b"))
	if status != http.StatusTeapot || string(body) != "PUT h b" {
		t.Fatalf("Request = %d %q, want 418 \"PUT h b\"", status, body)
	}
}
