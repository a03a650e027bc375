package httpapi_test

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/outboxtodo/outboxtodo/services/api/internal/apitest"
	"github.com/outboxtodo/outboxtodo/services/api/internal/httpapi"
	"github.com/outboxtodo/outboxtodo/services/api/internal/readside"
	"github.com/outboxtodo/outboxtodo/services/api/internal/syncstatus"
	"github.com/outboxtodo/outboxtodo/shared/outbox"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
	"github.com/outboxtodo/outboxtodo/tools/devstack/natsserver"
)

// TestHealthSyncHidesFailures: /health/sync is public. With PostgreSQL, NATS and
// MongoDB unreachable (each at an address, user and database of its own), the body
// names each failing source and the class of its failure, never the error text: no
// host, port, user or database appears in it. The log has the details, with the
// request id.
func TestHealthSyncHidesFailures(t *testing.T) {
	t.Parallel()
	closed := sharedtest.FreePorts(t, 2) // nothing listens on them
	pgAddr, mongoAddr := "127.0.0.1:"+closed[0], "127.0.0.1:"+closed[1]
	secrets := []string{pgAddr, mongoAddr, "pgsecretuser", "pgsecretdb", "mongosecretuser", "natssecretuser"}

	pool := apitest.Pool(t, "postgres://pgsecretuser@"+pgAddr+"/pgsecretdb?connect_timeout=2")
	mc, err := mongo.Connect(options.Client().ApplyURI("mongodb://mongosecretuser:pw@" + mongoAddr + "/?directConnection=true").
		SetServerSelectionTimeout(500 * time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mc.Disconnect(context.Background()) })
	ns := natsserver.NewTest(t, nil)
	natsAddr := strings.TrimPrefix(ns.ClientURL(), "nats://")
	secrets = append(secrets, natsAddr)
	_, js := natsserver.Connect(t, "nats://natssecretuser@"+natsAddr, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	ns.Stop()

	reporter := &syncstatus.Reporter{
		Outbox:    func(ctx context.Context) (outbox.Stats, error) { return outbox.ReadStats(ctx, pool) },
		JetStream: js, Stream: "EVENTS", Consumer: "projector",
		ReadModel: readside.New(mc, "read"),
		Timeout:   3 * time.Second,
		Now:       time.Now,
	}
	logs := &sharedtest.LogBuffer{}
	h := newHarness(t, func(o *httpapi.Options) {
		o.SyncReport = reporter.Report
		o.Log = slog.New(slog.NewMultiHandler(sharedtest.Logger(t, slog.LevelInfo).Handler(), slog.NewJSONHandler(logs, nil)))
	})
	res := h.do(req{method: "GET", path: "/health/sync", header: map[string]string{"X-Request-ID": "sync-probe-1"}})
	var rep struct {
		Status string
		Alerts []struct{ Check, Severity, Error, Message string }
	}
	res.json(t, &rep)
	classes := map[string]string{}
	for _, a := range rep.Alerts {
		classes[a.Check] = a.Error
	}
	if res.Status != http.StatusServiceUnavailable || rep.Status != "critical" ||
		classes["outbox"] == "" || classes["stream"] == "" || classes["read_model"] == "" {
		t.Fatalf("all sources down: %d %s", res.Status, res.Body)
	}
	for _, s := range secrets {
		if strings.Contains(string(res.Body), s) {
			t.Errorf("the body reveals %q: %s", s, res.Body)
		}
	}
	// The details are logged, with the request id of the request that gathered them.
	lines, err := logs.Lines()
	if err != nil {
		t.Fatal(err)
	}
	logged := map[string]bool{}
	for _, l := range lines {
		if l["msg"] == "sync report: a source could not be read" && l["request_id"] == "sync-probe-1" {
			logged[l["check"].(string)] = true
			if l["check"] == "outbox" && !strings.Contains(l["error"].(string), "pgsecretuser") {
				t.Errorf("the outbox failure's log line lacks the cause: %v", l)
			}
		}
	}
	if !logged["outbox"] || !logged["stream"] || !logged["read_model"] {
		t.Fatalf("failures logged with the request id: %v", logged)
	}
}

// TestHealthSyncIsShared: within the report's TTL one gathering serves every caller,
// however many arrive at once.
func TestHealthSyncIsShared(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	h := newHarness(t, func(o *httpapi.Options) {
		o.SyncReportTTL = time.Hour
		o.SyncReport = func(ctx context.Context) syncstatus.Report {
			calls.Add(1)
			return syncstatus.Report{Status: syncstatus.OK, CheckedAt: time.Now().UTC(), Alerts: []syncstatus.Alert{}}
		}
	})
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if res := h.do(req{method: "GET", path: "/health/sync"}); res.Status != http.StatusOK {
				t.Errorf("health/sync: %d %s", res.Status, res.Body)
			}
		})
	}
	wg.Wait()
	h.do(req{method: "GET", path: "/health/sync"})
	if n := calls.Load(); n != 1 {
		t.Fatalf("21 requests gathered %d reports, want 1", n)
	}
}
