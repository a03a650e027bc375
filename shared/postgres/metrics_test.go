package postgres_test

import (
	"testing"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/shared/admin"
	"github.com/outboxtodo/outboxtodo/shared/postgres"
)

// TestPoolCollector checks, on a real pool, that the pool collector's series carry the
// pool's name and its statistics. That the dashboards and alert rules reference only
// series it exports is checked by the deploy module's tests.
func TestPoolCollector(t *testing.T) {
	t.Parallel()
	pool, _ := dbtest.NewPool(t)
	reg := admin.NewRegistry()
	reg.MustRegister(postgres.PoolCollector(pool, "test"))
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
