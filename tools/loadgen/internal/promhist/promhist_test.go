package promhist

import (
	"math"
	"strings"
	"testing"
)

const exposition = `# HELP projector_lag_seconds Time from commit to the read model.
# TYPE projector_lag_seconds histogram
projector_lag_seconds_bucket{le="0.01"} 10
projector_lag_seconds_bucket{le="0.02"} 60
projector_lag_seconds_bucket{le="0.04"} 90
projector_lag_seconds_bucket{le="0.08"} 100
projector_lag_seconds_bucket{le="+Inf"} 100
projector_lag_seconds_sum 2.5
projector_lag_seconds_count 100
projector_batch_seconds_bucket{le="0.01"} 3
projector_batch_seconds_bucket{le="+Inf"} 3
`

func TestParseAndQuantile(t *testing.T) {
	t.Parallel()
	h, err := Parse(strings.NewReader(exposition), "projector_lag_seconds")
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Buckets) != 5 || h.Count != 100 || h.Sum != 2.5 {
		t.Fatalf("parsed %+v", h)
	}
	tests := []struct {
		q    float64
		want float64
	}{
		{0.05, 0.005}, // half way through the first bucket, from 0
		{0.5, 0.018},  // 40 of the 50 in (0.01, 0.02]
		{0.9, 0.04},   // exactly the top of a bucket
		{0.95, 0.06},  // half way through (0.04, 0.08]
		{1.0, 0.08},   // the highest observation's bucket
	}
	for _, tt := range tests {
		if got := h.Quantile(tt.q); math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("Quantile(%v) = %v, want %v", tt.q, got, tt.want)
		}
	}
}

func TestQuantileInInfBucket(t *testing.T) {
	t.Parallel()
	h := Histogram{Buckets: []Bucket{{0.1, 1}, {math.Inf(1), 10}}}
	if got := h.Quantile(0.99); got != 0.1 {
		t.Fatalf("Quantile in +Inf = %v, want the highest finite bound 0.1", got)
	}
	if got := (Histogram{Buckets: []Bucket{{math.Inf(1), 0}}}).Quantile(0.5); !math.IsNaN(got) {
		t.Fatalf("empty histogram quantile = %v, want NaN", got)
	}
}

func TestSub(t *testing.T) {
	t.Parallel()
	before := Histogram{Buckets: []Bucket{{0.01, 5}, {math.Inf(1), 5}}, Count: 5, Sum: 0.02}
	after := Histogram{Buckets: []Bucket{{0.01, 5}, {math.Inf(1), 15}}, Count: 15, Sum: 1.02}
	d, err := after.Sub(before)
	if err != nil {
		t.Fatal(err)
	}
	if d.Count != 10 || d.Buckets[0].Count != 0 || d.Buckets[1].Count != 10 || math.Abs(d.Sum-1) > 1e-9 {
		t.Fatalf("Sub = %+v", d)
	}
	if _, err := after.Sub(Histogram{Buckets: []Bucket{{0.01, 1}}}); err == nil {
		t.Fatal("Sub of different layouts: want an error")
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	if _, err := Parse(strings.NewReader(exposition), "missing_seconds"); err == nil {
		t.Fatal("missing histogram: want an error")
	}
	if _, err := Parse(strings.NewReader(`x_bucket{le="abc"} 1`), "x"); err == nil {
		t.Fatal("bad bound: want an error")
	}
}
