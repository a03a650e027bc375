package metrics_test

import (
	"testing"

	"github.com/outboxtodo/outboxtodo/deploy/observability"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/metrics"
	"github.com/outboxtodo/outboxtodo/shared/admin"
)

// TestObservabilityReferencesExist checks that every publisher metric the dashboards
// and alert rules in deploy/observability reference is registered by the publisher, on
// the same registry its admin server exposes.
func TestObservabilityReferencesExist(t *testing.T) {
	t.Parallel()
	reg := admin.NewRegistry()
	rec := observability.NewRecorder(reg)
	metrics.New(rec)
	names, err := rec.Names(reg)
	if err != nil {
		t.Fatal(err)
	}
	observability.Check(t, "publisher", names)
}
