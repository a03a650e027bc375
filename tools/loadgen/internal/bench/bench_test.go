package bench

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/report"
)

func TestCatchUpSeconds(t *testing.T) {
	t.Parallel()
	out := []byte(`{"level":"INFO","msg":"config","service":"projector"}
not json at all
{"level":"INFO","msg":"rebuild caught up","database":"x","stream_seq":20000,"seconds":41.5}
{"level":"INFO","msg":"read model switched","from":"a","to":"x"}`)
	if got, ok := catchUpSeconds(out); !ok || got != 41.5 {
		t.Fatalf("catchUpSeconds = %v, %v; want 41.5", got, ok)
	}
	if _, ok := catchUpSeconds([]byte(`{"msg":"read model switched"}`)); ok {
		t.Fatal("no catch-up record: want false")
	}
}

func TestConfigDefaultsAndValidation(t *testing.T) {
	// Not parallel: t.Setenv.
	cfg, err := LoadConfig()
	if err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if cfg.Clients != 32 || cfg.CompletePct+cfg.DeletePct > 100 {
		t.Fatalf("defaults = %+v", cfg)
	}
	for key, val := range map[string]string{
		"LOADGEN_CLIENTS":      "0",
		"LOADGEN_COMPLETE_PCT": "90",
		"LOADGEN_STEP":         "1s",
		"LOADGEN_CEILING_BULK": "5000",
		"LOADGEN_POLL":         "0s",
		"LOADGEN_LARGE_TODOS":  "10",
		"LOADGEN_DEADLINE":     "0s",
		"LOADGEN_REPLICAS":     "1",
		"LOADGEN_REPLICA_RATE": "0",
		"LOADGEN_REPLICA_LOAD": "0s",
	} {
		t.Run(key, func(t *testing.T) {
			t.Setenv(key, val)
			if _, err := LoadConfig(); err == nil {
				t.Fatalf("%s=%s: want an error", key, val)
			}
		})
	}
	t.Setenv("LOADGEN_ADMIN_DATABASE_URL", "postgres://u:hunter2@db/postgres")
	cfg, err = LoadConfig()
	if err != nil {
		t.Fatal(err)
	}
	if m := cfg.Masked().AdminURL; m == cfg.AdminURL {
		t.Fatalf("Masked kept the password: %s", m)
	}
}

// A failed phase is recorded with its error and skips only the phases that need it; a
// panic is a failure of its phase; past the deadline the rest are skipped.
func TestRunPhases(t *testing.T) {
	t.Parallel()
	r := &runner{log: slog.New(slog.DiscardHandler), res: &report.Results{}, deadline: time.Now().Add(time.Hour)}
	var ran []string
	ok := func(name string) func(context.Context) error {
		return func(context.Context) error { ran = append(ran, name); return nil }
	}
	r.runPhases(context.Background(), []phase{
		{"a", nil, time.Minute, ok("a")},
		{"b", []string{"a"}, time.Minute, func(context.Context) error { return errors.New("boom") }},
		{"c", []string{"b"}, time.Minute, ok("c")},
		{"d", []string{"a"}, time.Minute, func(context.Context) error { panic("oops") }},
		{"e", []string{"a"}, time.Millisecond, func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }},
		{"f", nil, time.Minute, ok("f")},
	})
	want := []struct{ name, status, err string }{
		{"a", report.StatusOK, ""},
		{"b", report.StatusFailed, "boom"},
		{"c", report.StatusSkipped, "needs b, which did not succeed"},
		{"d", report.StatusFailed, "panic: oops"},
		{"e", report.StatusFailed, "context deadline exceeded (the phase's bound of 0s, or the run's deadline, ran out)"},
		{"f", report.StatusOK, ""},
	}
	if len(r.res.Phases) != len(want) {
		t.Fatalf("phases = %+v", r.res.Phases)
	}
	for i, w := range want {
		if p := r.res.Phases[i]; p.Name != w.name || p.Status != w.status || p.Error != w.err {
			t.Errorf("phase %d = %+v, want %+v", i, p, w)
		}
	}
	if strings.Join(ran, ",") != "a,f" {
		t.Errorf("ran %v, want a and f", ran)
	}
	if got := r.res.Failed(); strings.Join(got, ",") != "b,d,e" {
		t.Errorf("Failed() = %v", got)
	}

	late := &runner{log: slog.New(slog.DiscardHandler), res: &report.Results{}, deadline: time.Now().Add(-time.Second)}
	late.runPhases(context.Background(), []phase{{"g", nil, time.Minute, ok("g")}})
	if p := late.res.Phases[0]; p.Status != report.StatusSkipped || !strings.HasPrefix(p.Error, "out of time") {
		t.Errorf("past the deadline: %+v, want skipped, out of time", p)
	}
}

// The extra projector replicas get devstack's projector's environment as
// /proc/<pid>/environ holds it; the last of duplicate keys counts, as in exec.
func TestEnviron(t *testing.T) {
	t.Parallel()
	env := environ([]byte("NATS_URL=nats://x:1\x00ADMIN_ADDR=:9092\x00STREAM_NAME=S\x00ADMIN_ADDR=127.0.0.1:19092\x00\x00"))
	if len(env) != 4 {
		t.Fatalf("environ = %q", env)
	}
	for key, want := range map[string]string{"ADMIN_ADDR": "127.0.0.1:19092", "STREAM_NAME": "S", "CONSUMER_NAME": "default"} {
		if got := envValue(env, key, "default"); got != want {
			t.Errorf("%s = %q, want %q", key, got, want)
		}
	}
}

// The replicas' steady load is capped at half the lowest sustained rate a search found.
func TestReplicaRate(t *testing.T) {
	t.Parallel()
	r := &runner{cfg: Config{ReplicaRate: 200}, res: &report.Results{}}
	if got := r.replicaRate(); got != 200 {
		t.Errorf("no search: %v, want 200", got)
	}
	r.res.Searches = []*report.Search{{MaxRate: 500}, {MaxRate: 0}}
	if got := r.replicaRate(); got != 200 {
		t.Errorf("searches at 500/s and none: %v, want 200", got)
	}
	r.res.Searches = append(r.res.Searches, &report.Search{MaxRate: 300})
	if got := r.replicaRate(); got != 150 {
		t.Errorf("a search at 300/s: %v, want 150", got)
	}
}
