package postgres_test

import (
	"testing"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/shared/admin"
	"github.com/outboxtodo/outboxtodo/shared/metricref"
	"github.com/outboxtodo/outboxtodo/shared/postgres"
)

// TestPoolCollectorExportsWhatObservabilityReferences checks that every pgxpool_ series
// the dashboards and alert rules in deploy/observability reference is exported by the
// pool collector, on a real pool.
func TestPoolCollectorExportsWhatObservabilityReferences(t *testing.T) {
	t.Parallel()
	pool, _ := dbtest.NewPool(t)
	reg := admin.NewRegistry()
	rec := metricref.NewRecorder(reg)
	rec.MustRegister(postgres.PoolCollector(pool, "test"))
	names, err := rec.Names(reg)
	if err != nil {
		t.Fatal(err)
	}
	metricref.Check(t, "../../deploy/observability", "postgres", names)

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "pgxpool_max_conns" {
			continue
		}
		m := mf.GetMetric()[0]
		if l := m.GetLabel(); len(l) != 1 || l[0].GetName() != "pool" || l[0].GetValue() != "test" {
			t.Errorf("pgxpool_max_conns labels %v, want pool=test", l)
		}
		if got, want := m.GetGauge().GetValue(), float64(pool.Config().MaxConns); got != want {
			t.Errorf("pgxpool_max_conns = %v, want the pool's %v", got, want)
		}
		return
	}
	t.Error("pgxpool_max_conns not gathered")
}
