package app_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/shared/admin"
	"github.com/outboxtodo/outboxtodo/shared/process"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

// TestMetricsExportThePools runs the API as main does and reads its admin /metrics:
// both PostgreSQL pools are there, told apart by their pool label, at their sizes.
func TestMetricsExportThePools(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	_ = ln.Close()
	logs := &sharedtest.LogBuffer{}
	log, err := process.NewLogger(logs, "api", "info")
	if err != nil {
		t.Fatal(err)
	}
	environ := map[string]string{
		"DATABASE_URL": dbtest.New(t), "API_ADDR": "127.0.0.1:0", "ADMIN_ADDR": "localhost:0", "DB_MAX_CONNS": "7",
		"NATS_URL": "nats://" + closed, "MONGODB_URI": "mongodb://" + closed + "/?directConnection=true", "MONGODB_TIMEOUT": "200ms",
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, log, environ) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("run did not stop")
		}
	})
	addr := loggedAddr(t, logs, done, "admin server listening")

	rctx, rcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer rcancel()
	body := sharedtest.Fetch(t, rctx, "http://"+addr+admin.MetricsPath)
	for _, want := range []string{`pgxpool_max_conns{pool="api"} 7`, `pgxpool_max_conns{pool="api-sync"} 2`, `pgxpool_acquired_conns{pool="api"} `} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if t.Failed() {
		t.Log(body)
	}
}
