package app_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/config"
	"github.com/outboxtodo/outboxtodo/shared/admin"
	"github.com/outboxtodo/outboxtodo/shared/process"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
	"github.com/outboxtodo/outboxtodo/tools/devstack/natsserver"
)

// TestMetricsExportThePool runs a publisher replica and reads its admin /metrics: its
// PostgreSQL pool is there under pool="publisher", at its size.
func TestMetricsExportThePool(t *testing.T) {
	t.Parallel()
	ctx := sharedtest.Context(t, time.Minute) // bounds a hang
	srv := natsserver.NewTest(t, nil)
	cfg, err := config.FromMap(map[string]string{
		"DATABASE_URL": dbtest.New(t), "NATS_URL": srv.ClientURL(), "ADMIN_ADDR": "127.0.0.1:0", "DB_MAX_CONNS": "3",
	})
	if err != nil {
		t.Fatal(err)
	}
	logs := &sharedtest.LogBuffer{}
	log, err := process.NewLogger(logs, "publisher", "info")
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- run(runCtx, log, cfg) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()

	addr := logs.Await(t, ctx, "admin server listening", "addr")
	body := sharedtest.Fetch(t, ctx, "http://"+addr+admin.MetricsPath)
	for _, want := range []string{`pgxpool_max_conns{pool="publisher"} 3`, `pgxpool_acquired_conns{pool="publisher"} `} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s:\n%s", want, body)
		}
	}
}
