package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/outboxtodo/outboxtodo/services/api/internal/flight"
	"github.com/outboxtodo/outboxtodo/services/api/internal/syncstatus"
)

// Check is one dependency probed by GET /health/databases. Fn must honour its
// context, which ends after Timeout.
type Check struct {
	Name    string
	Timeout time.Duration
	Fn      func(ctx context.Context) error
}

type checkResult struct {
	Name      string  `json:"name"`
	Status    string  `json:"status"` // up or down
	LatencyMS float64 `json:"latency_ms"`
}

type healthReport struct {
	Status string        `json:"status"` // ok, or down when any check is down
	Checks []checkResult `json:"checks"`
}

// healthDatabases runs every check concurrently, each under its own timeout, and
// answers 503 when any is down. Failures are logged, not shown: this is a public port.
func (a *api) healthDatabases(w http.ResponseWriter, r *http.Request) error {
	report := healthReport{Status: "ok", Checks: make([]checkResult, len(a.checks))}
	var wg sync.WaitGroup
	for i, c := range a.checks {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(r.Context(), c.Timeout)
			defer cancel()
			start := time.Now()
			err := c.Fn(ctx)
			res := checkResult{Name: c.Name, Status: "up", LatencyMS: float64(time.Since(start).Microseconds()) / 1000}
			if err != nil {
				res.Status = "down"
				a.log.WarnContext(r.Context(), "health check failed", "check", c.Name, "error", err)
			}
			report.Checks[i] = res
		})
	}
	wg.Wait()
	status := http.StatusOK
	for _, c := range report.Checks {
		if c.Status != "up" {
			report.Status, status = "down", http.StatusServiceUnavailable
		}
	}
	return writeJSON(w, status, report)
}

// healthSync answers the sync report: 200 when ok or warning, 503 when critical.
func (a *api) healthSync(w http.ResponseWriter, r *http.Request) error {
	if a.syncReports == nil {
		return errReadModel
	}
	rep, err := a.syncReports.get(r.Context())
	if err != nil {
		return err
	}
	status := http.StatusOK
	if rep.Status == syncstatus.Critical {
		status = http.StatusServiceUnavailable
	}
	return writeJSON(w, status, rep)
}

// syncRefreshTimeout bounds one gathering of the sync report, which runs on behalf of
// every waiting caller, so that one caller's cancelled request cannot fail the others.
// Each source has its own, shorter timeout inside it.
const syncRefreshTimeout = 10 * time.Second

// syncReports serves /health/sync from a report gathered at most once per ttl and
// shared by the concurrent callers of the replica: the route is public, and each report
// costs a count over the outbox backlog plus JetStream and MongoDB round trips. With ttl
// 0 every request gathers its own (concurrent ones still share one).
//
// The body names only the class of a source's failure (syncstatus.Alert.Error); the
// failure itself goes to the log once per report, with the request id of the request
// that gathered it and the report's checked_at, since its text can hold host names,
// users and addresses.
type syncReports struct {
	report func(ctx context.Context) syncstatus.Report
	ttl    time.Duration
	now    func() time.Time
	log    *slog.Logger
	group  flight.Group[syncstatus.Report]

	mu   sync.Mutex
	last *syncstatus.Report
	at   time.Time
}

func (c *syncReports) get(ctx context.Context) (syncstatus.Report, error) {
	if rep, ok := c.cached(); ok {
		return rep, nil
	}
	return c.group.Do(ctx, "sync", syncRefreshTimeout, func(rctx context.Context) (syncstatus.Report, error) {
		// A gathering that ended between the check above and this one is fresh too.
		if rep, ok := c.cached(); ok {
			return rep, nil
		}
		at := c.now()
		rep := c.report(rctx)
		for _, f := range rep.Failures {
			c.log.WarnContext(ctx, "sync report: a source could not be read", "check", f.Check, "error", f.Err,
				"request_id", requestID(ctx), "checked_at", rep.CheckedAt)
		}
		c.mu.Lock()
		c.last, c.at = &rep, at
		c.mu.Unlock()
		return rep, nil
	})
}

// cached returns the last report while it is younger than the ttl.
func (c *syncReports) cached() (syncstatus.Report, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == nil || c.now().Sub(c.at) >= c.ttl {
		return syncstatus.Report{}, false
	}
	return *c.last, true
}
