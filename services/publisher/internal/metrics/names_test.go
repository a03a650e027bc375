package metrics_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outboxtodo/outboxtodo/deploy/observability"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/metrics"
)

// TestObservabilityReferencesExist checks that every publisher metric the dashboards
// and alert rules in deploy/observability reference is registered by the publisher, on
// the same registry its admin server exposes.
func TestObservabilityReferencesExist(t *testing.T) {
	t.Parallel()
	observability.CheckRegistered(t, "publisher", func(reg prometheus.Registerer) { metrics.New(reg) })
}
