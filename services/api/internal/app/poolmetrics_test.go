package app_test

import (
	"strings"
	"testing"
	"time"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/shared/admin"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

// TestMetricsExportThePools runs the API as main does and reads its admin /metrics:
// both PostgreSQL pools are there, told apart by their pool label, at their sizes.
func TestMetricsExportThePools(t *testing.T) {
	t.Parallel()
	logs, done := startWithReadSideDown(t, map[string]string{"DATABASE_URL": dbtest.New(t), "DB_MAX_CONNS": "7"})
	addr := loggedAddr(t, logs, done, "admin server listening")

	rctx := sharedtest.Context(t, 20*time.Second)
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
