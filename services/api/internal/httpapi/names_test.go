package httpapi_test

import (
	"testing"

	"github.com/outboxtodo/outboxtodo/deploy/observability"
	"github.com/outboxtodo/outboxtodo/services/api/internal/httpapi"
	"github.com/outboxtodo/outboxtodo/shared/admin"
)

// TestObservabilityReferencesExist checks that every API metric the dashboards and
// alert rules in deploy/observability reference is registered by the router, with
// both rate limits on, on the registry the admin server exposes.
func TestObservabilityReferencesExist(t *testing.T) {
	t.Parallel()
	reg := admin.NewRegistry()
	rec := observability.NewRecorder(reg)
	newHarness(t, func(o *httpapi.Options) {
		o.Metrics = rec
		o.RateLimitPerIP = httpapi.RateLimit{PerSecond: 100, Burst: 100}
		o.RateLimitPerToken = httpapi.RateLimit{PerSecond: 100, Burst: 100}
	})
	names, err := rec.Names(reg)
	if err != nil {
		t.Fatal(err)
	}
	observability.Check(t, "api", names)
}
