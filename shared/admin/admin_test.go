package admin_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outboxtodo/outboxtodo/shared/admin"
)

func TestHandler(t *testing.T) {
	t.Parallel()
	reg := admin.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "things_total", Help: "Things."})
	reg.MustRegister(c)
	c.Inc()
	var readyErr error
	h := admin.Handler(reg, func(ctx context.Context) error { return readyErr }, slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(h)
	defer srv.Close()

	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get(admin.LivePath); code != 200 {
		t.Fatalf("livez = %d", code)
	}
	if code, _ := get(admin.ReadyPath); code != 200 {
		t.Fatalf("readyz = %d while ready", code)
	}
	readyErr = errors.New("database down")
	if code, body := get(admin.ReadyPath); code != 503 || !strings.Contains(body, "database down") {
		t.Fatalf("readyz = %d %q while not ready", code, body)
	}
	code, body := get(admin.MetricsPath)
	if code != 200 || !strings.Contains(body, "things_total 1") || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("metrics = %d, missing series:\n%s", code, body)
	}
	if code, _ := get("/debug/pprof/"); code != 200 {
		t.Fatalf("pprof index = %d", code)
	}
}
