package pgbench

import (
	"testing"
	"time"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

const output = `transaction type: /tmp/x/create.sql
scaling factor: 1
query mode: prepared
number of clients: 32
number of threads: 2
maximum number of tries: 1
duration: 15 s
number of transactions actually processed: 51234
number of failed transactions: 0 (0.000%)
latency average = 9.371 ms
latency stddev = 4.120 ms
initial connection time = 41.002 ms
tps = 3414.780162 (without initial connection time)
`

func TestParse(t *testing.T) {
	t.Parallel()
	got, err := Parse(output)
	if err != nil {
		t.Fatal(err)
	}
	want := Result{Clients: 32, Transactions: 51234, TPS: 3414.780162, LatencyAvgMS: 9.371, LatencyStdMS: 4.12}
	if got != want {
		t.Fatalf("Parse = %+v, want %+v", got, want)
	}
}

func TestParseRejectsIncompleteOutput(t *testing.T) {
	t.Parallel()
	for _, out := range []string{"", "latency average = 1.0 ms\n", "latency average = x ms\ntps = 1 (without initial connection time)\n"} {
		if _, err := Parse(out); err == nil {
			t.Errorf("Parse(%q): want an error", out)
		}
	}
}

// The script runs on the current schema and writes what the API's create writes: a
// todo, its owner's counts and an outbox row carrying them, once per transaction.
func TestScriptWritesACreate(t *testing.T) {
	t.Parallel()
	ctx := sharedtest.Context(t, time.Minute)
	pool, dbURL := dbtest.NewPool(t)
	if _, err := pool.Exec(ctx, SetupSQL(2)); err != nil {
		t.Fatal(err)
	}
	res, err := Run(ctx, dbURL, 2, time.Second, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if res.Transactions == 0 || res.Failed != 0 {
		t.Fatalf("pgbench: %+v", res)
	}
	var todos, outbox, open, versions, withStats int64
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM todos), (SELECT count(*) FROM outbox),
  (SELECT sum(open) FROM user_stats), (SELECT sum(version - 1) FROM user_stats),
  (SELECT count(*) FROM outbox WHERE (payload->'stats'->>'version')::bigint > 1)`).Scan(&todos, &outbox, &open, &versions, &withStats); err != nil {
		t.Fatal(err)
	}
	if todos != res.Transactions || outbox != todos || open != todos || versions != todos || withStats != todos {
		t.Fatalf("%d transactions wrote %d todos, %d outbox rows (%d with a bumped stats snapshot), open counts %d, stats versions +%d",
			res.Transactions, todos, outbox, withStats, open, versions)
	}
}
