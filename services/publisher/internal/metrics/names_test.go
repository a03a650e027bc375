package metrics_test

import (
	"testing"

	"github.com/outboxtodo/outboxtodo/services/publisher/internal/metrics"
	"github.com/outboxtodo/outboxtodo/shared/admin"
	"github.com/outboxtodo/outboxtodo/shared/metricref"
)

// TestObservabilityReferencesExist checks that every publisher metric the dashboards
// and alert rules in deploy/observability reference is registered by the publisher, on
// the same registry its admin server exposes.
func TestObservabilityReferencesExist(t *testing.T) {
	t.Parallel()
	reg := admin.NewRegistry()
	rec := metricref.NewRecorder(reg)
	metrics.New(rec)
	names, err := rec.Names(reg)
	if err != nil {
		t.Fatal(err)
	}
	metricref.Check(t, "../../../../deploy/observability", "publisher", names)
}
