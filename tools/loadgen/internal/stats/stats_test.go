package stats

import (
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	t.Parallel()
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one sample", []time.Duration{7}, 99.9, 7},
		{"p0 is the minimum", hundred, 0, time.Millisecond},
		{"p50 of 1..100", hundred, 50, 50 * time.Millisecond},
		{"p99 of 1..100", hundred, 99, 99 * time.Millisecond},
		{"p99.9 of 1..100 is the maximum", hundred, 99.9, 100 * time.Millisecond},
		{"p100", hundred, 100, 100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := Percentile(tt.sorted, tt.p); got != tt.want {
				t.Fatalf("Percentile(p%v) = %v, want %v", tt.p, got, tt.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	t.Parallel()
	samples := []time.Duration{4 * time.Millisecond, time.Millisecond, 3 * time.Millisecond, 2 * time.Millisecond}
	s := Summarize(samples, 2, 2*time.Second)
	want := Summary{Count: 4, Errors: 2, RPS: 2, Mean: 2.5, P50: 2, P95: 4, P99: 4, P999: 4, Max: 4}
	if s != want {
		t.Fatalf("Summarize = %+v, want %+v", s, want)
	}
	if got := Summarize(nil, 1, 0); got != (Summary{Errors: 1}) {
		t.Fatalf("Summarize(nil) = %+v", got)
	}
}

func TestRecorderAndSeries(t *testing.T) {
	t.Parallel()
	start := time.Unix(1000, 0)
	r := NewRecorder()
	r.Add("create", Sample{At: start.Add(100 * time.Millisecond), Latency: time.Millisecond})
	r.Add("create", Sample{At: start.Add(900 * time.Millisecond), Latency: 3 * time.Millisecond})
	r.Add("create", Sample{At: start.Add(2500 * time.Millisecond), Latency: 5 * time.Millisecond})
	r.Add("create", Sample{At: start.Add(2600 * time.Millisecond), Err: true})
	r.Add("create", Sample{At: start.Add(-time.Second), Latency: time.Hour}) // before the start: warm-up

	routes := r.Routes(time.Second)
	if c := routes["create"]; c.Count != 4 || c.Errors != 1 {
		t.Fatalf("create summary = %+v, want 4 ok and 1 error", c)
	}
	got := Series(r.Samples("create"), start, time.Second)
	want := []Point{{T: 0, P50: 1, P99: 3, N: 2}, {T: 2, P50: 5, P99: 5, N: 1}}
	if len(got) != len(want) {
		t.Fatalf("Series = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("Series[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
}
