package httpapi

import (
	"context"
	"net/http"
	"sync"
	"time"
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
