package pgbench

import "testing"

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
