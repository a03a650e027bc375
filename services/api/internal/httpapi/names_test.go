package httpapi_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outboxtodo/outboxtodo/deploy/observability"
	"github.com/outboxtodo/outboxtodo/services/api/internal/httpapi"
)

// TestObservabilityReferencesExist checks that every API metric the dashboards and
// alert rules in deploy/observability reference is registered by the router, with
// both rate limits on, on the registry the admin server exposes.
func TestObservabilityReferencesExist(t *testing.T) {
	t.Parallel()
	observability.CheckRegistered(t, "api", func(reg prometheus.Registerer) {
		newHarness(t, func(o *httpapi.Options) {
			o.Metrics = reg
			o.RateLimitPerIP = httpapi.RateLimit{PerSecond: 100, Burst: 100}
			o.RateLimitPerToken = httpapi.RateLimit{PerSecond: 100, Burst: 100}
		})
	})
}
