package pgbench

import (
	"testing"
	"time"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/shared/outbox"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

// BenchmarkNotifyCost measures what the publisher's wake-up costs the API's create at
// 32 clients: no notification, pg_notify in every transaction (as before issue 13),
// and the conditional notification (Script) with no publisher marked idle, as under
// load, and with one marked, as at rest. Each variant runs on a fresh database.
// Run it with: go test -run '^$' -bench NotifyCost -benchtime 1x ./internal/pgbench/
func BenchmarkNotifyCost(b *testing.B) {
	const clients = 32
	for _, v := range []struct {
		name   string
		script string
		marked bool
	}{
		{"none", ScriptWith(""), false},
		{"always", ScriptWith("SELECT pg_notify('" + outbox.Channel + "', '')"), false},
		{"conditional_unmarked", Script, false},
		{"conditional_marked", Script, true},
	} {
		b.Run(v.name, func(b *testing.B) {
			ctx := sharedtest.Context(b, 2*time.Minute)
			pool, dbURL := dbtest.NewPool(b)
			if _, err := pool.Exec(ctx, SetupSQL(clients)); err != nil {
				b.Fatal(err)
			}
			if v.marked {
				// A publisher replica marked idle and listening, as its wake.Flag marks it.
				if _, err := pool.Exec(ctx, "INSERT INTO outbox_listeners (replica_id, expires_at) VALUES ('bench', now() + interval '1 hour')"); err != nil {
					b.Fatal(err)
				}
			}
			for range b.N {
				res, err := RunScript(ctx, dbURL, v.script, clients, 15*time.Second, b.TempDir())
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(res.TPS, "tps")
				b.ReportMetric(res.LatencyAvgMS, "avg_ms")
			}
		})
	}
}
