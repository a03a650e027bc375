package metrics_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outboxtodo/outboxtodo/deploy/observability"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/metrics"
)

// TestObservabilityReferencesExist checks that every projector metric the dashboards
// and alert rules in deploy/observability reference is registered by the projector, on
// the same registry its admin server exposes.
func TestObservabilityReferencesExist(t *testing.T) {
	t.Parallel()
	observability.CheckRegistered(t, "projector", func(reg prometheus.Registerer) { metrics.New(reg) })
}
